"""Configuration: frozen defaults, ``load()`` from TOML or the original JSON, every problem listed."""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import string
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import platformdirs

from foldermon.errors import ConfigError
from foldermon.processors import ProcessorSpec, Registry

SYSTEM_CONFIG = Path("/etc/foldermon/agent.toml")
WATCH_MODES = ("auto", "inotify", "poll")
LOG_LEVELS = ("debug", "info", "warning", "error")
MAX_WORKERS = 64


def user_config_path() -> Path:
    """The per-user default config file (``~/.config/foldermon/agent.toml``)."""
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
    return Path(platformdirs.user_data_dir("foldermon")) / "watch"


@dataclass(frozen=True, slots=True)
class WatchConfig:
    dirs: tuple[Path, ...] = ()
    mode: str = "auto"
    poll_interval: float = 1.0
    settle: float = 0.5
    rescan_interval: float = 30.0
    exclude: tuple[str, ...] = (".*", "*.tmp", "*.part", "*.swp")
    done_suffix: str = ""


@dataclass(frozen=True, slots=True)
class OutputConfig:
    dir: Path | None = None
    name: str = "{stem}_processed{suffix}"


@dataclass(frozen=True, slots=True)
class RetryConfig:
    max_attempts: int = 3
    backoff: float = 5.0


@dataclass(frozen=True, slots=True)
class PipelineConfig:
    max_line_bytes: int = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class AgentConfig:
    log_level: str = "info"
    drain_timeout: float = 30.0
    workers: int = 1


@dataclass(frozen=True, slots=True)
class TelemetryConfig:
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


@dataclass(frozen=True, slots=True)
class Config:
    watch: WatchConfig = WatchConfig()
    output: OutputConfig = OutputConfig()
    retry: RetryConfig = RetryConfig()
    pipeline: PipelineConfig = PipelineConfig()
    agent: AgentConfig = AgentConfig()
    telemetry: TelemetryConfig = TelemetryConfig()
    processors: tuple[ProcessorSpec, ...] = ()
    source: str = field(default="", compare=False)


_SECTIONS: dict[str, type[Any]] = {
    "watch": WatchConfig,
    "output": OutputConfig,
    "retry": RetryConfig,
    "pipeline": PipelineConfig,
    "agent": AgentConfig,
    "telemetry": TelemetryConfig,
}


def load(path: Path | None, registry: Registry) -> Config:
    """Read and validate a config file (TOML, or the original tool's JSON pipeline file)."""
    if path is None:
        return Config()
    source = str(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"cannot read the config file: {exc}"], source) from exc
    raw = _parse(text, path, source)
    return from_mapping(raw, registry, source)


def _parse(text: str, path: Path, source: str) -> dict[str, Any]:
    looks_json = path.suffix == ".json" or text.lstrip().startswith("{")
    try:
        data: Any = json.loads(text) if looks_json else tomllib.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            [f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"], source
        ) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"invalid TOML: {exc}"], source) from exc
    if not isinstance(data, dict):
        raise ConfigError(["the top level must be a table/object"], source)
    return data


def from_mapping(raw: Mapping[str, Any], registry: Registry, source: str = "") -> Config:
    """Build a Config from parsed data, reporting every problem at once."""
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
        raise ConfigError(problems, source)
    return config


def _unknown(kind: str, name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    hint = f' (did you mean "{close[0]}"?)' if close else ""
    return f'unknown {kind} "{name}"{hint}; known: {", ".join(known)}'


def _section(name: str, cls: type[Any], values: Mapping[str, Any], problems: list[str]) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        f = fields.get(key)
        if f is None:
            problems.append(f"[{name}] " + _unknown("key", key, list(fields)))
            continue
        converted = _convert(value, getattr(cls(), key))
        if converted is not _BAD and f.type == "tuple[Path, ...]":
            converted = tuple(Path(v) for v in converted)  # the default () does not say Path
        if converted is _BAD:
            problems.append(f"[{name}] {key}: expected {_kind(getattr(cls(), key))}, got {value!r}")
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
        return Path(value) if isinstance(value, str) and value else (None if value == "" else _BAD)
    return value if isinstance(value, str) else _BAD


def _processor_specs(raw: Any, registry: Registry, problems: list[str]) -> tuple[ProcessorSpec, ...]:
    if not isinstance(raw, list):
        problems.append("processors must be a list of tables/objects")
        return ()
    specs: list[ProcessorSpec] = []
    seen: set[str] = set()
    for index, entry in enumerate(raw):
        if not isinstance(entry, Mapping) or not isinstance(entry.get("type"), str):
            problems.append(f'processors[{index}]: needs a "type" string, got {entry!r}')
            continue
        spec = spec_from_entry(entry, index)
        where = f'processors[{index}] (id "{spec.id}")'
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
    elif nested is not None:
        options["config"] = nested
    kind = str(entry["type"])
    ident = entry.get("id")
    return ProcessorSpec(
        type=kind, id=str(ident) if ident is not None else f"{kind}_{index}", options=options
    )


def validate(config: Config) -> list[str]:
    """Cross-field and range rules; every problem is returned, none raised."""
    problems: list[str] = []
    w = config.watch
    if w.mode not in WATCH_MODES:
        problems.append(f'[watch] mode: "{w.mode}" is not one of {", ".join(WATCH_MODES)}')
    for key in ("poll_interval", "settle", "rescan_interval"):
        value = getattr(w, key)
        if not math.isfinite(value) or value < 0 or (key != "settle" and value == 0):
            problems.append(f"[watch] {key}: must be a positive number of seconds, got {value}")
    if w.done_suffix and "/" in w.done_suffix:
        problems.append("[watch] done_suffix: must not contain '/'")
    problems.extend(_check_name_template(config.output.name))
    if config.retry.max_attempts < 1:
        problems.append(f"[retry] max_attempts: must be at least 1, got {config.retry.max_attempts}")
    # nan and inf are valid TOML floats; a retry or drain deadline built from them never comes.
    if not math.isfinite(config.retry.backoff) or config.retry.backoff < 0:
        problems.append(
            f"[retry] backoff: must be a finite, non-negative number of seconds, got {config.retry.backoff}"
        )
    if config.pipeline.max_line_bytes < 1:
        problems.append("[pipeline] max_line_bytes: must be at least 1")
    if config.agent.log_level not in LOG_LEVELS:
        problems.append(
            f'[agent] log_level: "{config.agent.log_level}" is not one of {", ".join(LOG_LEVELS)}'
        )
    if not math.isfinite(config.agent.drain_timeout) or config.agent.drain_timeout <= 0:
        problems.append("[agent] drain_timeout: must be a positive number of seconds")
    if not 1 <= config.agent.workers <= MAX_WORKERS:
        problems.append(f"[agent] workers: must be between 1 and {MAX_WORKERS}, got {config.agent.workers}")
    t = config.telemetry
    if not 0.0 <= t.line_sample_ratio <= 1.0:
        problems.append(f"[telemetry] line_sample_ratio: must be between 0 and 1, got {t.line_sample_ratio}")
    if t.max_line_spans_per_file < 0:
        problems.append("[telemetry] max_line_spans_per_file: must not be negative")
    return problems


def _check_name_template(template: str) -> list[str]:
    hint = "use {stem}, {suffix} and {name}"
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
        name = template.format(stem="x", suffix=".txt", name="x.txt")
    except (KeyError, IndexError, ValueError, AttributeError, TypeError) as exc:
        return [f"[output] name: {template!r} is not a valid template ({exc}); {hint}"]
    if any(f not in ("stem", "suffix", "name") for f in fields):
        return [f"[output] name: {template!r} may only hold plain fields; {hint}"]
    # Without the input's name in it, every input would write to the same output.
    if "stem" not in fields and "name" not in fields:
        return [f"[output] name: {template!r} must contain {{stem}} or {{name}}"]
    if "/" in name or name in ("", ".", ".."):
        return [f"[output] name: {template!r} must give a plain file name"]
    return []


def with_overrides(config: Config, **sections: Any) -> Config:
    """A copy with some section fields replaced, e.g. ``with_overrides(c, watch={"dirs": (...)})``."""
    changes = {
        name: dataclasses.replace(getattr(config, name), **values) for name, values in sections.items()
    }
    return dataclasses.replace(config, **changes)
