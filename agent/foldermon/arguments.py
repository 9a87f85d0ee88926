"""The command line's grammar: the verbs, their arguments and examples, and a parse that builds
only the verb asked for."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from foldermon import __version__, early
from foldermon.configcheck import LOG_LEVELS, MAX_WORKERS, nested_folders, repeated_folders

if TYPE_CHECKING:
    from _typeshed import SupportsWrite

EXAMPLES = {
    "run": """examples:
  foldermon-agent run --watch /srv/drop --config /etc/foldermon/agent.toml
  foldermon-agent run --watch ./watch_dir --once            # drain and exit
  foldermon-agent run --watch /srv/drop --workers 4         # four agent processes share the root""",
    "process": """examples:
  foldermon-agent process big.log --output big_processed.log --config pipeline.json
  foldermon-agent process data.csv --config agent.toml | less""",
    "status": """examples:
  foldermon-agent status --watch /srv/drop
  foldermon-agent status --json | jq '.roots[].failed'""",
    "failed": """examples:
  foldermon-agent failed --watch /srv/drop
  foldermon-agent failed --json""",
    "retry": """examples:
  foldermon-agent retry --watch /srv/drop orders.csv
  foldermon-agent retry --all""",
    "pause": """examples:
  foldermon-agent pause --watch /srv/drop --reason "disk swap"   # every agent on the root holds
  foldermon-agent status --watch /srv/drop                      # shows who paused it, since when""",
    "resume": """examples:
  foldermon-agent resume --watch /srv/drop""",
    "gc": """examples:
  foldermon-agent gc --watch /srv/drop --dry-run     # what retention would remove now
  foldermon-agent gc --config /etc/foldermon/agent.toml""",
    "explain": """examples:
  foldermon-agent explain orders.csv --line 53211 --config /etc/foldermon/agent.toml
  foldermon-agent explain orders.csv --watch /srv/drop --line 10,200-205   # in processed/ or failed/
  foldermon-agent explain big.log --line 7 --json | jq '.lines[0].steps'""",
    "check-config": """examples:
  foldermon-agent check-config /etc/foldermon/agent.toml""",
    "completion": """examples:
  foldermon-agent completion bash > ~/.local/share/bash-completion/completions/foldermon-agent
  foldermon-agent completion zsh > ~/.zfunc/_foldermon-agent""",
}


class _UnparsedError(Exception):
    """The arguments do not parse with a one-verb parser (see :func:`parse`)."""


class _Parser(argparse.ArgumentParser):
    """The top level, with its verbs' parsers at hand (errors about a verb come from it)."""

    verbs: dict[str, argparse.ArgumentParser]

    def print_help(self, file: SupportsWrite[str] | None = None) -> None:
        """The help on stdout, or exit 1 saying why it could not be written there (closed, a
        full disk): argparse would drop it and exit 0."""
        if file is not None:
            super().print_help(file)
            return
        if early.stdout_closed:
            self.exit(1, "foldermon-agent: standard output is closed\n")
        try:
            sys.stdout.write(self.format_help())
            sys.stdout.flush()
        except OSError as exc:
            os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # nothing left to flush at exit
            if isinstance(exc.__cause__ or exc, BrokenPipeError):
                self.exit(128 + signal.SIGPIPE)  # a reader gone (`| head`): quietly, as `cat`
            self.exit(1, f"foldermon-agent: {exc.strerror or exc}\n")  # named as stdout's (early.Reported)


class _OneVerbParser(_Parser):
    def error(self, message: str) -> NoReturn:
        raise _UnparsedError(message)


def _verb(sub: argparse._SubParsersAction[_Parser], name: str, text: str) -> _Parser:
    return sub.add_parser(
        name,
        help=text,
        description=text[0].upper() + text[1:] + ".",
        epilog=EXAMPLES[name],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,  # `run --output x` is not --output-dir
    )


def parse(argv: Sequence[str]) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    """Parse the command line, building only the verb it names when that is clear.

    Each verb's parser costs start-up time and a command runs one verb, so the arguments are
    first parsed by a parser that knows only the first argument naming a verb (and no help
    option at the top). Whatever does not parse that way to that verb (a value that happens to
    be a verb's name, a usage error, help) is parsed again by the whole parser, whose messages
    and help are the ones shown.
    """
    verb = next((a for a in argv if a in _VERBS), None)
    if verb is not None and not {"-h", "--help"} & set(argv):
        light = build_parser(only=verb, parser_class=_OneVerbParser)
        try:
            args = _checked(light, argv)
        except _UnparsedError:
            pass
        else:
            if args.command == verb:
                return light, args
    parser = build_parser()
    _misplaced_options(parser, argv, verb)
    return parser, _checked(parser, argv)


def _misplaced_options(parser: _Parser, argv: Sequence[str], verb: str | None) -> None:
    """A verb's own option given before the verb (``--watch DIR status``) is said as such:
    argparse would take its value for the verb and name that value instead."""
    if verb is None:
        return
    own = parser.verbs[verb]._option_string_actions  # argparse has no public view of them
    for arg in argv[: list(argv).index(verb)]:
        flag = arg.split("=", 1)[0]
        if flag.startswith("--") and flag not in parser._option_string_actions and flag in own:
            parser.error(f"{flag} is an option of {verb}: give it after the verb ({verb} {flag} ...)")


def _checked(parser: _Parser, argv: Sequence[str]) -> argparse.Namespace:
    """Parse, with the checks argparse cannot express; a usage error is said by the parser of
    the verb it is about."""
    args, extras = parser.parse_known_args(argv)
    where = parser.verbs.get(args.command, parser) if args.command else parser
    if extras:
        where.error(f"unrecognized arguments: {' '.join(extras)}")
    if args.command is not None:
        given = (("--monitor", args.original_monitor), ("--file", args.original_file))
        legacy = [flag for flag, value in given if value is not None]
        if legacy:
            parser.error(f"{legacy[0]} is the original form of a verb: give either it or {args.command}")
        if args.output is not None and args.command != "process":
            parser.error(f"--output goes with --file or process, not with {args.command}")
        own = parser.verbs[args.command]._option_string_actions  # argparse has no public view
        for flag, dest in _COMMON:
            if getattr(args, dest, None) not in (None, False) and flag not in own:
                parser.error(f"{flag} does not go with {args.command}")
    elif args.original_monitor is not None and args.output is not None:
        parser.error("--output goes with --file or process, not with --monitor")
    elif args.original_file is not None and args.output_dir is not None:
        parser.error("--output-dir goes with --monitor or run, not with --file (give --output)")
    folders = getattr(args, "watch", None) or []
    for index, _ in repeated_folders(folders):  # error() does not return
        where.error(f"--watch {folders[index]}: that folder is given twice; name each root once")
    for index, folder, outer in nested_folders(folders):
        where.error(f"--watch {folders[index]}: inside {folder}, a queue folder of --watch {folders[outer]}")
    if args.command == "retry" and bool(args.names) == bool(args.all):
        where.error("give the names of files in failed/, or --all (not both)")
    return args


def build_parser(only: str | None = None, parser_class: type[_Parser] = _Parser) -> _Parser:
    """The command line: every verb, or with ``only`` the top level and that one verb."""
    parser = parser_class(
        prog="foldermon-agent",
        description="Watch folders for new files and run their lines through a pipeline of processors.",
        epilog=(
            "exit codes: 0 success, 1 failure, 2 usage error, 75 files left waiting (run --once: a "
            "paused or full root, a file still being written), 78 configuration error (EX_CONFIG)"
        ),
        add_help=only is None,  # help is shown by the whole parser
        allow_abbrev=False,  # as after the verb: an option is given whole
    )
    parser.verbs = {}
    parser.add_argument("--version", action="version", version=f"foldermon-agent {__version__}")
    # The original tool's flags, kept working.
    parser.add_argument(
        "--monitor",
        metavar="DIR",
        type=_folder,
        dest="original_monitor",
        help="original form of: run --watch DIR",
    )
    parser.add_argument(
        "--file", metavar="IN", type=_file, dest="original_file", help="original form of: process IN"
    )
    parser.add_argument("--output", metavar="OUT", type=_file, help="with --file: the output file")
    _common(parser, default=None)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (text, add_arguments) in _VERBS.items():
        if only in (None, name):
            parser.verbs[name] = verb = _verb(sub, name, text)
            add_arguments(verb)
    return parser


def _run_arguments(run: argparse.ArgumentParser) -> None:
    run.add_argument("--watch", metavar="DIR", type=_folder, action="append", help="watch root (repeatable)")
    run.add_argument("--once", action="store_true", help="drain what is there and exit")
    run.add_argument(
        "--workers", metavar="N", type=_workers, help="agent processes sharing the roots (default 1)"
    )
    run.add_argument(
        "--create-parents", action="store_true", help="make a watch root's missing parent folders too"
    )
    _common(run)
    _quiet(run)


def _process_arguments(process: argparse.ArgumentParser) -> None:
    process.add_argument("input", metavar="FILE", type=_file)
    process.add_argument(
        "--output",
        metavar="FILE",
        type=_file,
        default=argparse.SUPPRESS,
        help="written atomically; default: stdout",
    )
    _common(process, output_dir=False)
    _quiet(process)


def _listing_arguments(listing: argparse.ArgumentParser) -> None:
    _roots(listing)
    listing.add_argument("--json", action="store_true", help="machine-readable output")


def _status_arguments(status: argparse.ArgumentParser) -> None:
    _listing_arguments(status)
    status.add_argument("--quiet", action="store_true", help="plain text, no table, even on a terminal")


def _retry_arguments(retry: argparse.ArgumentParser) -> None:
    _roots(retry)
    retry.add_argument("names", metavar="NAME", nargs="*", help="file names in failed/")
    retry.add_argument("--all", action="store_true", help="every file in failed/")


def _pause_arguments(pause: argparse.ArgumentParser) -> None:
    _roots(pause)
    pause.add_argument(
        "--reason",
        default="",
        type=_reason,
        help="said in status and in the agents' logs (at most 1000 characters)",
    )


def _gc_arguments(gc: argparse.ArgumentParser) -> None:
    _roots(gc)
    gc.add_argument("--dry-run", action="store_true", help="only say what would be removed")


def _explain_arguments(explain: argparse.ArgumentParser) -> None:
    explain.add_argument(
        "file", metavar="FILE", type=_file, help="a path, or a name in processed/ or failed/"
    )
    explain.add_argument(
        "--line", required=True, metavar="N[,M-K]", type=_lines, help="line numbers and ranges, from 1"
    )
    explain.add_argument(
        "--watch", metavar="DIR", type=_folder, action="append", help="watch root to look in"
    )
    explain.add_argument(
        "--config",
        metavar="FILE",
        type=_file,
        default=argparse.SUPPRESS,
        help="the pipeline to replay (TOML or JSON)",
    )
    explain.add_argument("--json", action="store_true", help="machine-readable output")


def _file_argument(check: argparse.ArgumentParser) -> None:
    check.add_argument("file", metavar="FILE", type=_file)


def _completion_arguments(completion: argparse.ArgumentParser) -> None:
    completion.add_argument("shell", choices=("bash", "zsh"))


def _workers(text: str) -> int:
    """``--workers N``: the same range as ``[agent] workers``, refused as a usage error."""
    if not (text.isascii() and text.isdigit() and 1 <= int(text) <= MAX_WORKERS):
        raise argparse.ArgumentTypeError(
            f"{text[:80]!r}: give a number of agent processes from 1 to {MAX_WORKERS}, as [agent] workers"
        )
    return int(text)


def _lines(text: str) -> list[int]:
    """``--line``: a malformed list is a usage error (exit 2), said in a sentence."""
    from foldermon import explaintext

    try:
        return explaintext.parse_lines(text)
    except explaintext.LineSpecError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _reason(text: str) -> str:
    """``pause --reason``: a sentence, not a document (the marker is read in 64 KiB)."""
    if len(text) > 1000:
        raise argparse.ArgumentTypeError(f"{len(text)} characters; at most 1000")
    return text


def _folder(text: str) -> Path:
    """A folder argument: ``~`` expanded (also in ``--watch=~/drop``); empty is a usage error
    rather than the current folder."""
    if not text:
        raise argparse.ArgumentTypeError("an empty path; give a folder")
    return Path(os.path.expanduser(text))  # as the shell: left as written for an unknown user


def _file(text: str) -> Path:
    """A file: ``~`` expanded, as the shell does not in ``--config=~/agent.toml`` or in quotes
    (and as ``--watch`` does); empty is a usage error rather than the current folder."""
    if not text:
        raise argparse.ArgumentTypeError("an empty path; give a file")
    return Path(os.path.expanduser(text))


def _roots(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--watch", metavar="DIR", type=_folder, action="append", help="watch root (repeatable)"
    )
    parser.add_argument(
        "--config",
        metavar="FILE",
        type=_file,
        default=argparse.SUPPRESS,
        help="read the watch roots from this config",
    )


def _quiet(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quiet", action="store_true", help="no progress display on a terminal")


# The options given before the verb as well as after it: (flag, destination).
_COMMON = (
    ("--config", "config"),
    ("--output-dir", "output_dir"),
    ("--trace", "trace"),
    ("--log-level", "log_level"),
)


def _common(
    parser: argparse.ArgumentParser, default: object = argparse.SUPPRESS, *, output_dir: bool = True
) -> None:
    parser.add_argument(
        "--config", metavar="FILE", type=_file, default=default, help="TOML config or JSON pipeline"
    )
    if output_dir:
        parser.add_argument(
            "--output-dir", metavar="DIR", type=_folder, default=default, help="where outputs go"
        )
    parser.add_argument("--trace", action="store_true", default=default, help="one span per line (bounded)")
    parser.add_argument("--log-level", choices=LOG_LEVELS, default=default)


_VERBS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None]]] = {
    "run": ("watch the roots and process files as they arrive", _run_arguments),
    "process": ("run one file through the pipeline", _process_arguments),
    "status": ("show queue counts per watch root", _status_arguments),
    "failed": ("list quarantined files with their reasons and trace ids", _listing_arguments),
    "retry": ("move quarantined files back to unprocessed/ with a fresh attempt count", _retry_arguments),
    "pause": ("hold every agent serving the roots: nothing new is claimed", _pause_arguments),
    "resume": ("let the agents claim again after a pause", _roots),
    "gc": ("remove what [retention] says is old enough, once", _gc_arguments),
    "explain": ("replay a file and show each processor's step for chosen lines", _explain_arguments),
    "check-config": ("validate a config file without running", _file_argument),
    "completion": ("print a shell completion script", _completion_arguments),
}
