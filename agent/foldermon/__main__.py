"""Entry point of the console script and of ``python -m foldermon``."""

import os
import signal
import sys

from foldermon import __version__, early

TYPE_CHECKING = False  # typing is not loaded at start: it costs a few ms
if TYPE_CHECKING:
    from typing import TextIO


def _null(fd: int) -> "TextIO":
    """/dev/null on the closed descriptor ``fd``, so no file opened later takes its number."""
    null = os.open(os.devnull, os.O_WRONLY)
    if null != fd:
        os.dup2(null, fd)
        os.close(null)
    return open(fd, "w", buffering=1, closefd=False)


def main() -> int:
    # Started without stderr: what would be said there goes nowhere (print's default would send
    # it to stdout, among a verb's data).
    if sys.stderr is None:
        sys.stderr = _null(2)
    # A full or broken stderr loses what is said there, never the verb's work or its exit code.
    stderr = sys.stderr
    sys.stderr = early.Lossy(lambda: stderr)
    if sys.stdout is None:  # refused after parsing, unless the verb writes nothing there
        sys.stdout = _null(1)
        early.stdout_closed = True
    stdout = sys.stdout
    sys.stdout = early.Reported(lambda: stdout)
    if sys.argv[1:] == ["--version"]:  # asked by scripts and package checks: no parser needed
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # a closed pipe ends it quietly
        if early.stdout_closed:
            print("foldermon-agent: standard output is closed", file=sys.stderr)
            return 1
        try:
            print(f"foldermon-agent {__version__}", flush=True)
        except OSError as exc:  # a full disk (said as stdout's, by early.Reported)
            print(f"foldermon-agent: {getattr(exc, 'strerror', exc)}", file=sys.stderr)
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
