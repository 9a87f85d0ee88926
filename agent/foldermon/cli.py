"""Command line: config resolution, the verbs, typed errors mapped to exit codes.

Each verb imports what it uses when it runs (the agent, OpenTelemetry, structlog, rich): a
short command such as ``--version`` or a one-line ``process`` starts in a few times the
interpreter's own start-up.
"""

from __future__ import annotations

import argparse
import errno
import os
import select
import signal
import stat
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from foldermon import early
from foldermon.arguments import build_parser, parse
from foldermon.errors import (
    EX_CONFIG,
    EX_FAILURE,
    EX_OK,
    EX_TEMPFAIL,
    EX_USAGE,
    ConfigError,
    FoldermonError,
    ProcessorError,
    WatchUnavailableError,
)

if TYPE_CHECKING:
    from foldermon import config as cfg
    from foldermon.processors import Registry
    from foldermon.telemetry import Telemetry


def config_path(explicit: Path | None) -> Path | None:
    """--config, else FOLDERMON_CONFIG, else the default file if present: the system file when
    running as root, the per-user file otherwise."""
    from foldermon import config as cfg

    if explicit is not None:
        return explicit
    env = os.environ.get("FOLDERMON_CONFIG")
    if env:
        return Path(os.path.expanduser(env))  # a unit's Environment= is not expanded by a shell
    default = cfg.SYSTEM_CONFIG if os.geteuid() == 0 else cfg.user_config_path()
    return default if default.is_file() else None


def load_config(args: argparse.Namespace, registry: Registry) -> cfg.Config:
    """The config file with command-line flags applied over it."""
    from foldermon import config as cfg

    config = cfg.load(config_path(getattr(args, "config", None)), registry)
    given = getattr(args, "watch", None)
    output: dict[str, object] = {}
    if getattr(args, "output_dir", None):
        output["dir"] = args.output_dir
    telemetry = {"trace_lines": True} if getattr(args, "trace", False) else {}
    agent: dict[str, object] = {"log_level": args.log_level} if getattr(args, "log_level", None) else {}
    if getattr(args, "workers", None) is not None:
        agent["workers"] = args.workers
    watch: dict[str, object] = {"dirs": tuple(roots_for(given, config))}
    if getattr(args, "create_parents", False) or not (given or config.watch.dirs):
        watch["create_parents"] = True  # asked for, or the agent's own default root
    return cfg.with_overrides(
        config,
        watch=watch,
        output=output,
        telemetry=telemetry,
        agent=agent,
    )


def _legacy(args: argparse.Namespace, parser: argparse.ArgumentParser) -> argparse.Namespace:
    """Map ``--monitor DIR`` and ``--file IN --output OUT`` onto run and process."""
    if args.original_monitor is not None and args.original_file is not None:
        parser.error("--monitor and --file cannot be combined")
    if args.original_monitor is not None:
        return argparse.Namespace(
            **{**vars(args), "command": "run", "watch": [args.original_monitor], "once": False}
        )
    if args.original_file is not None:
        return argparse.Namespace(**{**vars(args), "command": "process", "input": args.original_file})
    parser.print_help(sys.stderr)
    raise SystemExit(EX_USAGE)


def main(argv: Sequence[str] | None = None) -> int:
    parser, args = parse(sys.argv[1:] if argv is None else argv)
    # Workers of `run --workers N` are started with the same arguments.
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.command is None:
        args = _legacy(args, parser)
    for key in ("config", "output_dir", "trace", "log_level", "quiet"):
        if not hasattr(args, key):
            setattr(args, key, None)
    try:
        _check_stdout(args)
        if args.command != "run":
            if _is_a_pipe(1) and not _is_a_pipe(2) and not _into_a_file(args):
                # A closed pipe (`| head`) ends a command quietly, as it does other Unix tools.
                # (Not otherwise: a broken pipe on stderr must not end it before it cleans up;
                # with both pipes, a broken stdout ends it below.)
                signal.signal(signal.SIGPIPE, signal.SIG_DFL)
            early.restore()  # only the agent defers early signals; one come meanwhile stops it here
        code = _dispatch(args)
        sys.stdout.flush()  # a report that cannot be written fails the verb (said below)
    except (ConfigError, WatchUnavailableError, FoldermonError, OSError) as exc:
        return _failed(args, exc)
    except KeyboardInterrupt as exc:  # early.CtrlC: a signal stopped the verb
        return 128 + getattr(exc, "signum", signal.SIGINT)
    return code


def _failed(args: argparse.Namespace, exc: FoldermonError | WatchUnavailableError | OSError) -> int:
    """The exit code of a verb ended by ``exc``, which is said on stderr in a sentence."""
    if _stdout_broken(args, exc):
        os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # nothing left to flush at exit
        return 128 + signal.SIGPIPE  # as the signal would have ended it, quietly
    if isinstance(exc, ConfigError):
        print(
            f"foldermon-agent: configuration error in {exc.source or 'the configuration'}:",
            file=sys.stderr,
        )
        for problem in exc.problems:
            print(f"  - {problem}", file=sys.stderr)
        return EX_CONFIG
    if isinstance(exc, WatchUnavailableError):
        print(f"foldermon-agent: {exc}", file=sys.stderr)
        return EX_CONFIG
    if isinstance(exc, FoldermonError):
        cause = exc.__cause__ if isinstance(exc, ProcessorError) else None
        because = f": {type(cause).__name__}: {cause}" if cause is not None else ""
        print(f"foldermon-agent: {exc}{because}", file=sys.stderr)
        # run --once on a root whose disk is full: try again later, as for a file left waiting.
        return EX_TEMPFAIL if getattr(args, "once", False) and _short_of_space(exc) else EX_FAILURE
    # A folder or file the command needs: a sentence, never a traceback.
    where = f": {exc.filename}" if exc.filename else ""
    print(f"foldermon-agent: {exc.strerror or exc}{where}", file=sys.stderr)
    return EX_FAILURE


def _stdout_broken(args: argparse.Namespace, exc: BaseException | None) -> bool:
    """Whether ``exc`` came of writing to a stdout pipe whose reader is gone (SIGPIPE is left
    ignored when stderr is a pipe too, so that a broken stderr does not end the verb)."""
    if _into_a_file(args) or not _is_a_pipe(1):
        return False
    while exc is not None and not isinstance(exc, BrokenPipeError):
        exc = exc.__cause__ or exc.__context__
    if exc is None:
        return False
    poll = select.poll()
    poll.register(1, select.POLLOUT)
    return any(events & (select.POLLERR | select.POLLHUP) for _, events in poll.poll(0))


def _is_a_pipe(fd: int) -> bool:
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


def _into_a_file(args: argparse.Namespace) -> bool:
    """``process --output FILE``: the one verb that writes nothing to stdout."""
    return args.command == "process" and bool(args.output) and str(args.output) != "-"


def _check_stdout(args: argparse.Namespace) -> None:
    """Started with stdout closed: only ``process --output FILE`` may run."""
    if early.stdout_closed and not _into_a_file(args):
        raise FoldermonError("standard output is closed")


def _short_of_space(exc: BaseException | None) -> bool:
    """Whether a full disk or quota is behind ``exc`` (an error of opening a root, say)."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        exc = exc.__cause__
    return False


def _dispatch(args: argparse.Namespace) -> int:
    from foldermon import config as cfg
    from foldermon.processors import Registry

    if args.command in commands_for_roots:
        from foldermon import commands  # the verbs for people load rich and shtab; `run` never does

        config = cfg.load(config_path(args.config), Registry.load())
        roots = roots_for(args.watch, config)
        named_by = "--watch" if args.watch else "[watch] dirs" if config.watch.dirs else ""
        if commands.not_roots(roots, named_by):
            return EX_FAILURE
        return getattr(commands, commands_for_roots[args.command])(args, roots, config)  # type: ignore[no-any-return]
    registry = Registry.load()
    if args.command in ("completion", "explain", "check-config"):
        return _inspect(args, registry)
    config = load_config(args, registry)
    if args.command == "process":
        return _process(args, config, registry)
    return _run(args, config, registry)


def _inspect(args: argparse.Namespace, registry: Registry) -> int:
    """The verbs that read and report without touching a queue."""
    from foldermon import config as cfg

    if args.command == "completion":
        from foldermon import commands

        return commands.completion(build_parser(), args.shell)
    if args.command == "explain":
        return _explain(args, cfg.load(config_path(args.config), registry), registry)
    return _check_config(args.file, registry)


def _process(args: argparse.Namespace, config: cfg.Config, registry: Registry) -> int:
    from foldermon import console
    from foldermon import log as logmod
    from foldermon.oneshot import process_file

    show = bool(args.output) and console.interactive(sys.stdout, quiet=args.quiet)
    # The file's records may go to stdout, so the log goes to stderr.
    logmod.configure(config.agent.log_level, stream=sys.stderr)
    if not config.telemetry.wanted(os.environ):  # nothing to export: no spans are made at all
        return process_file(config, registry, None, args.input, args.output, progress=show)
    telemetry = _command_telemetry(config, data_on_stdout=args.output is None or str(args.output) == "-")
    try:
        return process_file(config, registry, telemetry, args.input, args.output, progress=show)
    finally:
        telemetry.shutdown()


def _check_config(path: Path, registry: Registry) -> int:
    from foldermon import config as cfg

    config = cfg.load(path, registry)
    ids = ", ".join(f"{s.id} ({s.type})" for s in config.processors) or "none: lines pass through"
    print(f"{path}: OK; processors: {ids}")
    return EX_OK


# Seconds each OTLP export of a one-shot verb may take: a collector that is down costs that, once
# per signal, not the exporters' 10 s of retries.
_ONE_SHOT_EXPORT = 1.0


def _command_telemetry(config: cfg.Config, *, data_on_stdout: bool, line_spans: int = 0) -> Telemetry:
    """Telemetry for a one-shot verb: its log on stderr (JSON unless a terminal), as is the
    console exporters' output when stdout carries the verb's data (a file's records, a report)."""
    from foldermon import log as logmod
    from foldermon.queue.ids import new_instance_id
    from foldermon.telemetry import Telemetry

    # Configured before Telemetry is built: it takes its logger then.
    logmod.configure(config.agent.log_level, stream=sys.stderr)
    console = sys.stderr if data_on_stdout else None
    telemetry = Telemetry(
        config.telemetry,
        new_instance_id(),
        console=console,
        export_timeout=_ONE_SHOT_EXPORT,
        line_spans=line_spans,
    )
    logmod.configure(config.agent.log_level, stream=sys.stderr, extra=telemetry.log_processors())
    return telemetry


def _explain(args: argparse.Namespace, config: cfg.Config, registry: Registry) -> int:
    from foldermon import commands, explain, explaintext

    roots = roots_for(args.watch, config)
    if args.watch and commands.not_roots(roots, "--watch"):
        return EX_FAILURE
    bare = os.sep not in str(args.file)  # a name: with --watch, the root's file before the current folder's
    path, folder = explain.find_file(args.file, roots, roots_first=bool(args.watch) and bare)
    record = explaintext.record_summary(path, folder)
    if record and not args.json:  # said before the replay, which may take long
        print(explaintext.record_text(record), flush=True)
    from foldermon.oneshot import data_on_stdout

    if not config.telemetry.wanted(os.environ):
        with data_on_stdout():  # what the replayed plugins write stays out of the report
            doc = explain.explain(config, registry, path, args.line)
    else:
        from foldermon.telemetry import record_links

        # One line span per asked line, made together when the replay ends: room for them all.
        telemetry = _command_telemetry(config, data_on_stdout=True, line_spans=explaintext.MAX_LINES)
        try:
            links = record_links(record or {})
            with data_on_stdout():
                doc = explain.explain(config, registry, path, args.line, tracer=telemetry.tracer, links=links)
        finally:
            telemetry.shutdown()
    if args.json:
        print(explaintext.to_json({**doc, "record": record}))
    else:
        print(explaintext.render(doc, None))
    return EX_OK


def _run(args: argparse.Namespace, config: cfg.Config, registry: Registry) -> int:
    import contextlib

    from foldermon import console
    from foldermon import log as logmod
    from foldermon.queue.ids import new_instance_id
    from foldermon.sdnotify import Notifier
    from foldermon.service import Agent
    from foldermon.supervisor import PROGRESS_ENV, ProgressReporter, die_with_supervisor, wait_for_siblings
    from foldermon.telemetry import Telemetry

    instance_id = new_instance_id()
    logmod.configure(config.agent.log_level)
    worker = die_with_supervisor()
    if worker is None and config.agent.workers > 1:
        return _supervise(args, config, instance_id)
    telemetry = Telemetry(config.telemetry, instance_id, worker=worker or 0)
    logmod.configure(config.agent.log_level, extra=telemetry.log_processors())
    if not worker:  # said once, by the agent, not by every worker
        telemetry.announce()
    show = args.once and worker is None and console.interactive(sys.stdout, quiet=args.quiet)
    with console.FilesProgress() if show else contextlib.nullcontext() as progress:
        notifier = Notifier.from_environ()
        agent = Agent(
            lambda: load_config(args, registry),
            registry,
            telemetry,
            instance_id=instance_id,
            once=args.once,
            notifier=notifier,
            progress=ProgressReporter(notifier) if os.environ.get(PROGRESS_ENV) else progress,
            # The folder gauges are the same for every worker: one of them reports them.
            queue_gauges=not worker,
            siblings=wait_for_siblings if worker == 0 else None,
        )
        return agent.run()


def _supervise(args: argparse.Namespace, config: cfg.Config, instance_id: str) -> int:
    import contextlib

    from foldermon import console
    from foldermon.queue.layout import Layout
    from foldermon.supervisor import Supervisor
    from foldermon.watch import NameRules

    show = args.once and console.interactive(sys.stdout, quiet=args.quiet)
    layouts = [Layout.for_root(d, config.output.dir) for d in config.watch.dirs]
    telemetry = _supervisor_telemetry(config, instance_id)
    try:
        with console.FilesProgress() if show else contextlib.nullcontext() as progress:
            supervisor = Supervisor(
                args.argv,
                config.agent.workers,
                layouts,
                once=args.once,
                drain_timeout=config.agent.drain_timeout,
                progress=progress,
                instance_id=instance_id,
                rules=NameRules.from_settings(config.watch),
            )
            return supervisor.run()
    finally:
        if telemetry is not None:
            telemetry.shutdown()


def _supervisor_telemetry(config: cfg.Config, instance_id: str) -> Telemetry | None:
    """The supervisor of ``--workers`` sends its log over OTLP when logs are (a worker killed and
    started again is said there); the workers make the spans and metrics."""
    if not config.telemetry.wanted(os.environ):
        return None
    from foldermon import log as logmod
    from foldermon.telemetry import Telemetry

    env = {**os.environ, "OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none"}
    telemetry = Telemetry(config.telemetry, instance_id, env=env, worker=None)
    if telemetry.logger_provider is None:
        telemetry.shutdown()
        return None
    logmod.configure(config.agent.log_level, extra=telemetry.log_processors())
    return telemetry


def roots_for(given: Sequence[Path] | None, config: cfg.Config) -> list[Path]:
    """The roots a verb acts on: ``--watch``, else ``[watch] dirs``, else the default root."""
    from foldermon import config as cfg

    return [cfg.expand_home(d).absolute() for d in given or config.watch.dirs or (cfg.default_watch_dir(),)]


# The verbs that act on watch roots, and their handlers in ``commands``.
commands_for_roots = {
    "status": "status",
    "failed": "failed",
    "retry": "retry",
    "pause": "pause",
    "resume": "resume",
    "gc": "gc",
}


__all__ = ["main"]
