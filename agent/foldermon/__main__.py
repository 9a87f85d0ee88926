"""Entry point of the console script and of ``python -m foldermon``."""

import signal
import sys

from foldermon import __version__, early


def main() -> int:
    if sys.stdout is None:  # started with its standard output closed: nothing could be said
        print("foldermon-agent: standard output is closed", file=sys.stderr)
        return 1
    if sys.argv[1:] == ["--version"]:  # asked by scripts and package checks: no parser needed
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # a closed pipe ends it quietly
        try:
            print(f"foldermon-agent {__version__}", flush=True)
        except (OSError, AttributeError) as exc:  # a full disk, a closed stdout (None)
            print(
                f"foldermon-agent: cannot write the version: {getattr(exc, 'strerror', exc)}", file=sys.stderr
            )
            return 1
        return 0
    # Before anything slow is imported: a signal in the first instants must not kill the agent.
    early.record()
    try:
        from foldermon.cli import main as cli_main  # noqa: PLC0415 - after the handlers, on purpose

        return cli_main()
    except KeyboardInterrupt as exc:  # a stop signal at the edge of a verb (early.CtrlC)
        return 128 + getattr(exc, "signum", signal.SIGINT)
    finally:
        for signum in early.SIGNALS:  # one that comes now ends the process as it asks
            signal.signal(signum, signal.SIG_DFL)


if __name__ == "__main__":
    raise SystemExit(main())
