"""Configuration: frozen defaults, ``load()`` from TOML or the original JSON, every problem listed."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from foldermon.configcheck import (
    MAX_DEPTH,
    MAX_FILE_BYTES,
    parse_duration,
    short,
    validate,
)
from foldermon.errors import ConfigError
from foldermon.processors import ProcessorSpec, Registry

SYSTEM_CONFIG = Path("/etc/foldermon/agent.toml")


def user_config_path() -> Path:
    """The per-user default config file (``~/.config/foldermon/agent.toml``)."""
    import platformdirs  # only when no config file is named

    return Path(platformdirs.user_config_dir("foldermon")) / "agent.toml"


def default_watch_dir() -> Path:
    """The watch root used when none is configured.

    Under systemd, ``<StateDirectory>/watch`` (``/var/lib/foldermon/watch`` for the system
    units); as root, that same path; otherwise a per-user one.
    """
    state = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    if state:
        return Path(state) / "watch"
    if os.geteuid() == 0:
        return Path("/var/lib/foldermon/watch")
    import platformdirs  # only when no root is named

    return Path(platformdirs.user_data_dir("foldermon")) / "watch"


# The sections, and the other small records on the path of a one-shot command (processor specs,
# pipeline stages, stream results), are NamedTuples rather than frozen dataclasses: importing
# `dataclasses` (with `inspect`) and building the classes took about 10 ms of a one-line
# `process`, whose whole start is about 35 ms.
class WatchConfig(NamedTuple):
    dirs: tuple[Path, ...] = ()
    mode: str = "auto"
    poll_interval: float = 1.0
    settle: float = 0.5
    rescan_interval: float = 30.0
    exclude: tuple[str, ...] = (".*", "*.tmp", "*.part", "*.swp")
    done_suffix: str = ""
    create_parents: bool = False  # make a root's missing parent folders (else a typo is an error)
    order: str = "arrival"  # arrival | oldest | name
    priority: tuple[str, ...] = ()  # globs: names matching an earlier one are claimed first


class OutputConfig(NamedTuple):
    dir: Path | None = None
    name: str = "{stem}_processed{suffix}"
    compress: str = "none"  # none | same | gzip | zstd


class RetryConfig(NamedTuple):
    max_attempts: int = 3
    backoff: float = 5.0


class PipelineConfig(NamedTuple):
    max_line_bytes: int = 64 * 1024 * 1024
    max_file_seconds: float = 0.0  # 0: no limit
    max_input_bytes: int = 0  # decompressed bytes per file; 0: DEFAULT_MAX_INPUT_BYTES


# A compressed input may not expand to more than this unless [pipeline] max_input_bytes says so.
DEFAULT_MAX_INPUT_BYTES = 1 << 40


class RetentionConfig(NamedTuple):
    """Ages in seconds after which files are removed; None keeps them forever."""

    processed_max_age: float | None = None
    output_max_age: float | None = None
    failed_max_age: float | None = None


class GuardConfig(NamedTuple):
    min_free: str = ""  # bytes, "500MB" or "5%"


class AgentConfig(NamedTuple):
    log_level: str = "info"
    drain_timeout: float = 30.0
    workers: int = 1
    # How long a check that this instance still owns its claims vouches for an output published
    # after it (see Queue.confirm_lease). None: 5 s on a network or FUSE filesystem, 0 (off) on a
    # local one.
    lease: float | None = None


class TelemetryConfig(NamedTuple):
    trace_lines: bool = False
    line_sample_ratio: float = 1.0
    max_line_spans_per_file: int = 1000
    # Same meaning as the OTEL_* variables; an environment variable wins over these.
    endpoint: str = ""
    protocol: str = ""
    headers: str = ""
    traces_exporter: str = ""
    metrics_exporter: str = ""
    logs_exporter: str = ""
    metric_export_interval: float = 0.0
    prometheus_host: str = ""
    prometheus_port: int = 0
    traces_sampler: str = ""
    traces_sampler_arg: float = 1.0
    resource_attributes: str = ""

    def wanted(self, env: Mapping[str, str]) -> bool:
        """Whether anything asks for telemetry: a key of this section or an OTEL_* variable.
        Without either nothing would be exported, so a one-shot command can skip it all."""
        return self != TelemetryConfig() or any(key.startswith("OTEL_") for key in env)


class Config(NamedTuple):
    watch: WatchConfig = WatchConfig()
    output: OutputConfig = OutputConfig()
    retry: RetryConfig = RetryConfig()
    pipeline: PipelineConfig = PipelineConfig()
    retention: RetentionConfig = RetentionConfig()
    guard: GuardConfig = GuardConfig()
    agent: AgentConfig = AgentConfig()
    telemetry: TelemetryConfig = TelemetryConfig()
    processors: tuple[ProcessorSpec, ...] = ()
    source: str = ""  # the file it was read from


# Keys whose values are not of their default's type: durations ("12h"), sizes ("500MB", "5%"),
# and folders (strings made Paths).
_KINDS = {
    ("watch", "dirs"): "paths",
    ("retention", "processed_max_age"): "duration",
    ("retention", "output_max_age"): "duration",
    ("retention", "failed_max_age"): "duration",
    ("guard", "min_free"): "size",
    ("agent", "lease"): "duration",
}

_SECTIONS: dict[str, type[Any]] = {
    "watch": WatchConfig,
    "output": OutputConfig,
    "retry": RetryConfig,
    "pipeline": PipelineConfig,
    "retention": RetentionConfig,
    "guard": GuardConfig,
    "agent": AgentConfig,
    "telemetry": TelemetryConfig,
}


def expand_home(path: str | os.PathLike[str]) -> Path:
    """``~`` and ``~user`` expanded as the shell does: left as written when there is no such user
    (or no home) rather than raising."""
    return Path(os.path.expanduser(path))


def load(path: Path | None, registry: Registry) -> Config:
    """Read and validate a config file (TOML, or the original tool's JSON pipeline file)."""
    if path is None:
        return Config()
    source = str(path)
    try:
        data = _read_regular(path)
        text = data.decode("utf-8")
    except OSError as exc:
        raise ConfigError([f"cannot read the config file: {exc.strerror or exc}"], source) from exc
    except (UnicodeDecodeError, ValueError) as exc:
        raise ConfigError([f"cannot read the config file: {exc}"], source) from exc
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError([f"the file is larger than {MAX_FILE_BYTES} bytes; a config file is small"], source)
    raw = _parse(text, path, source)
    from foldermon import configtext  # only with a file to read

    places = None if _looks_json(text, path) else configtext.file_places(text, raw)
    return from_mapping(raw, registry, source, places=places)


def _read_regular(path: Path) -> bytes:
    """A config file's bytes, never blocking: a FIFO in its place is refused, not waited on
    (/dev/null, an empty configuration, is fine)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        mode = os.fstat(fd).st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISCHR(mode)):
            raise OSError(errno.EINVAL, "not a regular file (a FIFO, socket or folder in its place?)")
        return f.read(MAX_FILE_BYTES + 1)


def _parse(text: str, path: Path, source: str) -> dict[str, Any]:
    import json
    import tomllib

    twice: list[str] = []

    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        """An object whose keys are given once (TOML refuses a key given twice; JSON would keep
        the last value and drop the first without a word)."""
        found: dict[str, Any] = {}
        for key, value in pairs:
            if key in found:
                twice.append(f"the key {key!r} is given twice in one object; give it once")
            found[key] = value
        return found

    try:
        if _looks_json(text, path):
            data: Any = json.loads(text, object_pairs_hook=unique)
        else:
            data = tomllib.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            [f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"], source
        ) from exc
    except tomllib.TOMLDecodeError as exc:
        from foldermon.configtext import toml_problem

        raise ConfigError([toml_problem(exc, text)], source) from exc
    except RecursionError as exc:
        raise ConfigError([f"nested more than {MAX_DEPTH} levels deep"], source) from exc
    except ValueError as exc:  # an integer of thousands of digits, say
        raise ConfigError([f"cannot parse the file: {exc}"], source) from exc
    if twice:
        raise ConfigError(twice, source)
    if not isinstance(data, dict):
        raise ConfigError(["the top level must be a table/object"], source)
    if _depth(data) > MAX_DEPTH:
        raise ConfigError([f"nested more than {MAX_DEPTH} levels deep"], source)
    return data


def _looks_json(text: str, path: Path) -> bool:
    return path.suffix == ".json" or text.lstrip().startswith("{")


def _depth(data: Any) -> int:
    """How deeply tables and lists nest (without recursion: the data may be very deep)."""
    deepest = 0
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        deepest = max(deepest, depth)
        if deepest > MAX_DEPTH:
            break
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
        stack.extend((child, depth + 1) for child in children)
    return deepest


def from_mapping(
    raw: Mapping[str, Any],
    registry: Registry,
    source: str = "",
    *,
    places: list[tuple[str, int | None]] | None = None,
) -> Config:
    """Build a Config from parsed data, reporting every problem at once, in the file's order:
    that of ``places`` (see :func:`configtext.file_places`), by default that of ``raw``'s keys."""
    problems: list[str] = []
    sections: dict[str, Any] = {}
    for name, value in raw.items():
        if name == "processors":
            continue
        cls = _SECTIONS.get(name)
        if cls is None:
            problems.append(_unknown("section", name, [*_SECTIONS, "processors"]))
        elif not isinstance(value, Mapping):
            problems.append(f"[{name}] must be a table")
        else:
            sections[name] = _section(name, cls, value, problems)
    specs = _processor_specs(raw.get("processors", []), registry, problems)
    config = Config(**sections, processors=specs, source=source)
    problems.extend(validate(config))
    if problems:
        order: list[tuple[str, int | None]] = places if places is not None else [(n, None) for n in raw]
        from foldermon.configtext import place

        raise ConfigError(sorted(problems, key=lambda p: place(p, raw, order)), source)
    return config


def _unknown(kind: str, name: str, known: list[str]) -> str:
    import difflib

    close = difflib.get_close_matches(name, known, n=1)
    hint = f' (did you mean "{close[0]}"?)' if close else ""
    shown = name if len(name) <= 80 else name[:77] + "..."
    return f'unknown {kind} "{shown}"{hint}; known: {", ".join(known)}'


def _section(name: str, cls: type[Any], values: Mapping[str, Any], problems: list[str]) -> Any:
    defaults: dict[str, Any] = cls._field_defaults
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key not in defaults:
            problems.append(f"[{name}] " + _unknown("key", key, list(defaults)))
            continue
        kind = _KINDS.get((name, key))
        converted: Any
        if kind == "duration":
            converted = _BAD if (seconds := parse_duration(value)) is None else seconds
        elif kind == "size":
            ok = isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))
            converted = str(value) if ok else _BAD
        else:
            converted = _convert(value, defaults[key])
        if converted is not _BAD and kind == "paths":
            if "" in converted:  # would be the current folder
                problems.append(f"[{name}] {key}: an empty path; give a folder")
                continue
            converted = tuple(expand_home(v) for v in converted)
        if converted is _BAD:
            expected = {"duration": 'seconds or a duration such as "12h"', "size": 'bytes, "500MB" or "5%"'}
            what = expected.get(kind or "", _kind(defaults[key]))
            problems.append(f"[{name}] {key}: expected {what}, got {short(value)}")
        else:
            kwargs[key] = converted
    return cls(**kwargs)


_BAD = object()


def _kind(default: Any) -> str:
    if isinstance(default, bool):
        return "true or false"
    if isinstance(default, int):
        return "an integer"
    if isinstance(default, float):
        return "a number"
    if isinstance(default, tuple):
        return "a list of strings"
    return "a string"


def _convert(value: Any, default: Any) -> Any:
    """Coerce a parsed value to the type of the field's default, or return _BAD."""
    if isinstance(default, bool):
        return value if isinstance(value, bool) else _BAD
    if isinstance(default, int):
        return value if isinstance(value, int) and not isinstance(value, bool) else _BAD
    if isinstance(default, float):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return float(value) if ok else _BAD
    if isinstance(default, tuple):
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        return tuple(value) if ok else _BAD
    if default is None or isinstance(default, Path):
        return expand_home(value) if isinstance(value, str) and value else (None if value == "" else _BAD)
    return value if isinstance(value, str) else _BAD


def _processor_specs(raw: Any, registry: Registry, problems: list[str]) -> tuple[ProcessorSpec, ...]:
    if not isinstance(raw, list):
        problems.append("processors must be a list of tables/objects")
        return ()
    specs: list[ProcessorSpec] = []
    seen: set[str] = set()
    for index, entry in enumerate(raw):
        if not isinstance(entry, Mapping) or not isinstance(entry.get("type"), str):
            problems.append(f'processors[{index}]: needs a "type" string, got {short(entry)}')
            continue
        ident = entry.get("id")
        if ident is not None and not (isinstance(ident, str) and ident.strip()):
            problems.append(f'processors[{index}]: "id" must be a non-empty string, got {short(ident)}')
            continue
        nested = entry.get("config")
        if "config" in entry and not isinstance(nested, Mapping):
            problems.append(f'processors[{index}]: "config" must be a table of options, got {short(nested)}')
            continue
        flat = set(entry) - {"type", "id", "config"}
        twice = sorted(flat & set(nested)) if isinstance(nested, Mapping) else []
        if twice:
            problems.append(
                f"processors[{index}]: {', '.join(map(str, twice))} given both beside and under "
                '"config"; give each option once'
            )
        spec = spec_from_entry(entry, index)
        where = f'processors[{index}] (id "{spec.id[:80]}")'
        if len(spec.id) > 128 or "\0" in spec.id or len(spec.type) > 128:
            problems.append(f"{where}: type and id must be at most 128 characters, without NUL")
            continue
        if spec.id in seen:
            problems.append(f"{where}: duplicate id; give each processor a unique id")
        seen.add(spec.id)
        problems.extend(f"{where}: {p}" for p in registry.check(spec))
        specs.append(spec)
    return tuple(specs)


def spec_from_entry(entry: Mapping[str, Any], index: int) -> ProcessorSpec:
    """One processor entry; options may be flat or nested under "config" as in the original JSON."""
    options = {k: v for k, v in entry.items() if k not in ("type", "id", "config")}
    nested = entry.get("config")
    if isinstance(nested, Mapping):
        options.update(nested)
    kind = str(entry["type"])
    ident = entry.get("id")
    return ProcessorSpec(
        type=kind, id=str(ident) if ident is not None else f"{kind}_{index}", options=options
    )


def with_overrides(config: Config, **sections: Any) -> Config:
    """A copy with some section fields replaced, e.g. ``with_overrides(c, watch={"dirs": (...)})``."""
    changes = {name: getattr(config, name)._replace(**values) for name, values in sections.items()}
    return config._replace(**changes)
