"""Entry point of the console script and of ``python -m foldermon``."""

import signal
import sys

from foldermon import __version__, early


def main() -> int:
    if sys.argv[1:] == ["--version"]:  # asked by scripts and package checks: no parser needed
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # a closed pipe ends it quietly
        print(f"foldermon-agent {__version__}")
        return 0
    # Before anything slow is imported: a signal in the first instants must not kill the agent.
    early.record()
    from foldermon.cli import main as cli_main  # noqa: PLC0415 - after the handlers, on purpose

    return cli_main()


if __name__ == "__main__":
    raise SystemExit(main())
