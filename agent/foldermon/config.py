"""Configuration: frozen defaults, ``load()`` from TOML or the original JSON, every problem listed."""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import json
import math
import os
import re
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
MAX_ATTEMPTS = 1000
MAX_LINE_BYTES = 1 << 40
MAX_LINE_SPANS = 1_000_000
MAX_SECONDS = 7 * 86400.0
# A config file is small; anything bigger (or deeper) is refused before it is looked at.
MAX_FILE_BYTES = 1 << 20
MAX_DEPTH = 32


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
    max_file_seconds: float = 0.0  # 0: no limit


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
        with path.open("rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
        text = data.decode("utf-8")
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError([f"cannot read the config file: {exc}"], source) from exc
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError([f"the file is larger than {MAX_FILE_BYTES} bytes; a config file is small"], source)
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
    except RecursionError as exc:
        raise ConfigError([f"nested more than {MAX_DEPTH} levels deep"], source) from exc
    except ValueError as exc:  # an integer of thousands of digits, say
        raise ConfigError([f"cannot parse the file: {exc}"], source) from exc
    if not isinstance(data, dict):
        raise ConfigError(["the top level must be a table/object"], source)
    if _depth(data) > MAX_DEPTH:
        raise ConfigError([f"nested more than {MAX_DEPTH} levels deep"], source)
    return data


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
    shown = name if len(name) <= 80 else name[:77] + "..."
    return f'unknown {kind} "{shown}"{hint}; known: {", ".join(known)}'


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
            problems.append(f"[{name}] {key}: expected {_kind(getattr(cls(), key))}, got {_short(value)}")
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
            problems.append(f'processors[{index}]: needs a "type" string, got {_short(entry)}')
            continue
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
    elif nested is not None:
        options["config"] = nested
    kind = str(entry["type"])
    ident = entry.get("id")
    return ProcessorSpec(
        type=kind, id=str(ident) if ident is not None else f"{kind}_{index}", options=options
    )


def validate(config: Config) -> list[str]:
    """Cross-field and range rules; every problem is returned, none raised.

    Every value the agent uses is checked here, so ``check-config`` accepts exactly what
    ``run`` (and a reload) can use: types, ranges, NUL bytes, format specs.
    """
    return [
        *_watch_problems(config.watch),
        *_output_problems(config.output),
        *_range("retry", "max_attempts", config.retry.max_attempts, 1, MAX_ATTEMPTS),
        *_seconds("retry", "backoff", config.retry.backoff, zero=True),
        *_range("pipeline", "max_line_bytes", config.pipeline.max_line_bytes, 1, MAX_LINE_BYTES),
        *_seconds("pipeline", "max_file_seconds", config.pipeline.max_file_seconds, zero=True),
        *_choice("agent", "log_level", config.agent.log_level, LOG_LEVELS),
        *_seconds("agent", "drain_timeout", config.agent.drain_timeout),
        *_range("agent", "workers", config.agent.workers, 1, MAX_WORKERS),
        *telemetry_problems(config.telemetry),
    ]


def _watch_problems(w: WatchConfig) -> list[str]:
    problems = [
        *_choice("watch", "mode", w.mode, WATCH_MODES),
        *_seconds("watch", "poll_interval", w.poll_interval, least=0.01),
        *_seconds("watch", "settle", w.settle, zero=True),
        *_seconds("watch", "rescan_interval", w.rescan_interval, least=0.01),
    ]
    for index, path in enumerate(w.dirs):
        problems.extend(_path_problems(f"[watch] dirs[{index}]", path))
    if len(w.exclude) > 256 or any(len(g) > 1024 or "\0" in g for g in w.exclude):
        problems.append("[watch] exclude: at most 256 patterns of at most 1024 characters, without NUL")
    suffix = w.done_suffix
    if "/" in suffix or "\0" in suffix or len(os.fsencode(suffix)) > 64 or suffix in (".", ".."):
        problems.append(
            f"[watch] done_suffix: {_short(suffix)} must be a name ending of at most 64 bytes, "
            "without '/' or NUL"
        )
    return problems


def _output_problems(o: OutputConfig) -> list[str]:
    problems = _check_name_template(o.name)
    if o.dir is not None:
        problems.extend(_path_problems("[output] dir", o.dir))
    return problems


def _path_problems(where: str, path: Path) -> list[str]:
    raw = os.fsencode(str(path))
    if b"\0" in raw:
        return [f"{where}: contains a NUL byte"]
    if len(raw) >= 4096 or any(len(part) > 255 for part in raw.split(b"/")):
        return [f"{where}: too long for a path (at most 4095 bytes, 255 per name)"]
    return []


def _range(section: str, key: str, value: int, low: int, high: int) -> list[str]:
    if low <= value <= high:
        return []
    return [f"[{section}] {key}: must be between {low} and {high}, got {_short(value)}"]


def _seconds(section: str, key: str, value: float, *, zero: bool = False, least: float = 0.0) -> list[str]:
    """A duration: finite, at most a week; zero only where it means "none" or "off"."""
    ok = math.isfinite(value) and value <= MAX_SECONDS and (value > least or (zero and value == 0))
    if ok:
        return []
    low = "0" if zero else f"more than {least:g}"
    return [f"[{section}] {key}: must be a number of seconds from {low} to {MAX_SECONDS:g}, got {value}"]


def _choice(section: str, key: str, value: str, choices: tuple[str, ...]) -> list[str]:
    if value in choices:
        return []
    shown = value if len(value) <= 80 else value[:77] + "..."
    return [f'[{section}] {key}: "{shown}" is not one of {", ".join(choices)}']


def _short(value: object) -> str:
    """A value as it may appear in a message: its repr, cut to a readable length."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def telemetry_problems(t: TelemetryConfig) -> list[str]:
    """The [telemetry] values; the same rules apply to the OTEL_* variables at start."""
    problems = []
    if not 0.0 <= t.line_sample_ratio <= 1.0:
        problems.append(f"[telemetry] line_sample_ratio: must be between 0 and 1, got {t.line_sample_ratio}")
    problems += _range("telemetry", "max_line_spans_per_file", t.max_line_spans_per_file, 0, MAX_LINE_SPANS)
    if t.metric_export_interval != 0:
        problems += _seconds("telemetry", "metric_export_interval", t.metric_export_interval, least=0.001)
    if t.prometheus_port != 0:
        problems += _range("telemetry", "prometheus_port", t.prometheus_port, 1, 65535)
    if not math.isfinite(t.traces_sampler_arg) or not 0.0 <= t.traces_sampler_arg <= 1.0:
        problems.append(
            f"[telemetry] traces_sampler_arg: must be between 0 and 1, got {t.traces_sampler_arg}"
        )
    for key in (
        "endpoint",
        "protocol",
        "headers",
        "traces_exporter",
        "metrics_exporter",
        "logs_exporter",
        "prometheus_host",
        "traces_sampler",
        "resource_attributes",
    ):
        problem = telemetry_value_problem(key, getattr(t, key))
        if problem:
            problems.append(f"[telemetry] {key}: {problem}")
    return problems


_HOST = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*\.?")
_URL = re.compile(r"https?://[^\s/?#]+(/[^\s]*)?", re.IGNORECASE)
_PAIR = re.compile(r"\s*[^=,\s][^=,]*=[^,]*")
TELEMETRY_CHOICES = {
    "protocol": ("grpc", "http/protobuf"),
    "traces_exporter": ("otlp", "console", "none"),
    "metrics_exporter": ("otlp", "prometheus", "console", "none"),
    "logs_exporter": ("otlp", "console", "none"),
    "traces_sampler": (
        "always_on",
        "always_off",
        "parentbased_always_on",
        "parentbased_always_off",
        "traceidratio",
        "parentbased_traceidratio",
    ),
}


def telemetry_value_problem(key: str, value: str) -> str | None:  # noqa: PLR0911 - one rule per return
    """What is wrong with one telemetry setting given as text (empty means unset); None if fine."""
    if not value:
        return None
    if "\0" in value or len(value) > 8192:
        return "must be at most 8192 characters, without NUL"
    text = value.strip().lower()
    if key in TELEMETRY_CHOICES and text not in TELEMETRY_CHOICES[key]:
        return f"{_short(value)} is not one of {', '.join(TELEMETRY_CHOICES[key])}"
    if key == "endpoint" and not _URL.fullmatch(value.strip()):
        return f"{_short(value)} is not an http:// or https:// URL"
    if key in ("headers", "resource_attributes") and not all(_PAIR.fullmatch(p) for p in value.split(",")):
        return f"{_short(value)} is not a list of key=value pairs separated by commas"
    if key == "prometheus_host" and not _valid_host(value):
        return f"{_short(value)} is not an IP address or host name"
    return None


def _valid_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        # Digits and dots only, yet not an address (300.1.1.1): no resolver takes it as a name.
        return bool(_HOST.fullmatch(host)) and not host.replace(".", "").isdigit() and len(host) <= 253
    return True


def _check_name_template(template: str) -> list[str]:  # noqa: PLR0911 - one rule per return
    hint = "use {stem}, {suffix} and {name}"
    if "\0" in template or len(template) > 200:
        return [f"[output] name: {_short(template)} must be at most 200 characters, without NUL"]
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        return [f"[output] name: {_short(template)} is not a valid template ({exc}); {hint}"]
    fields = [f for _, f, _, _ in parsed if f is not None]
    # No format spec or conversion: "{stem:>999999999}" would build gigabytes per file.
    if any(f not in ("stem", "suffix", "name") for f in fields) or any(s or c for _, f, s, c in parsed if f):
        why = "only plain fields, without format specs or conversions"
        return [f"[output] name: {_short(template)} is not a valid template ({why}); {hint}"]
    # Without the input's name in it, every input would write to the same output.
    if "stem" not in fields and "name" not in fields:
        return [f"[output] name: {_short(template)} must contain {{stem}} or {{name}}"]
    name = template.format(stem="x", suffix=".txt", name="x.txt")
    if "/" in name or name in ("", ".", ".."):
        return [f"[output] name: {_short(template)} must give a plain file name"]
    # Dot names in the output folder are the agent's own (temp outputs).
    if name.startswith("."):
        return [f"[output] name: {_short(template)} must not start with '.' (dot names are the agent's)"]
    return []


def with_overrides(config: Config, **sections: Any) -> Config:
    """A copy with some section fields replaced, e.g. ``with_overrides(c, watch={"dirs": (...)})``."""
    changes = {
        name: dataclasses.replace(getattr(config, name), **values) for name, values in sections.items()
    }
    return dataclasses.replace(config, **changes)
