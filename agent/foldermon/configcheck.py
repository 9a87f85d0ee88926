"""Every rule a configuration must satisfy, beyond its types: ranges, NUL bytes, format specs,
names, durations, sizes. ``check-config`` and ``run`` (and a reload) apply the same rules, so
what one accepts the other can use."""

from __future__ import annotations

import ipaddress
import math
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from foldermon.config import Config, OutputConfig, TelemetryConfig, WatchConfig

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
ORDERS = ("arrival", "oldest", "name")
COMPRESS = ("none", "same", "gzip", "zstd")
MAX_AGE = 100 * 365 * 86400.0
MAX_INPUT_BYTES = 1 << 50
# Patterns, compiled at first use (re caches them): a command that checks nothing skips it.
# Digits 0-9 only (``\d`` would take any script's digits, and float() underscores too).
_NUMBER = r"([0-9]+(?:\.[0-9]+)?)"
_DURATION = rf"\s*{_NUMBER}\s*([smhd]?)\s*"
_SIZE = rf"\s*{_NUMBER}\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)?\s*"
_SIZE_UNITS = {None: 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
               "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40}  # fmt: skip


def parse_duration(value: object) -> float | None:
    """Seconds from a number or a string such as ``"90s"``, ``"15m"``, ``"12h"``, ``"7d"``; else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if not isinstance(value, str) or len(value) > 40:
        return None
    found = re.fullmatch(_DURATION, value)
    if found is None:
        return None
    return float(found.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[found.group(2)]


def parse_min_free(value: str) -> tuple[int, float] | None:
    """``[guard] min_free`` as (bytes, share of the disk): ``"500MB"``, ``"2GiB"``, bytes, or ``"5%"``."""
    text = value.strip()
    if text.endswith("%"):
        number = re.fullmatch(rf"{_NUMBER}\s*", text[:-1]) if len(text) <= 40 else None
        if number is None:
            return None
        share = float(number.group(1))
        return (0, share / 100) if 0 < share < 100 else None
    found = re.fullmatch(_SIZE, text) if len(text) <= 40 else None
    if found is None:
        return None
    return int(float(found.group(1)) * _SIZE_UNITS[found.group(2)]), 0.0


def validate(config: Config) -> list[str]:
    """Cross-field and range rules; every problem is returned, none raised.

    Every value the agent uses is checked here, so ``check-config`` accepts exactly what
    ``run`` (and a reload) can use: types, ranges, NUL bytes, format specs.
    """
    return [
        *_watch_problems(config.watch),
        *_output_problems(config.output),
        *_output_place_problems(config),
        *_range("retry", "max_attempts", config.retry.max_attempts, 1, MAX_ATTEMPTS),
        *_seconds("retry", "backoff", config.retry.backoff, zero=True),
        *_range("pipeline", "max_line_bytes", config.pipeline.max_line_bytes, 1, MAX_LINE_BYTES),
        *_range("pipeline", "max_input_bytes", config.pipeline.max_input_bytes, 0, MAX_INPUT_BYTES),
        *_retention_problems(config),
        *_guard_problems(config.guard.min_free),
        *_seconds("pipeline", "max_file_seconds", config.pipeline.max_file_seconds, zero=True),
        *_choice("agent", "log_level", config.agent.log_level, LOG_LEVELS),
        *_seconds("agent", "drain_timeout", config.agent.drain_timeout),
        *([] if config.agent.lease is None else _seconds("agent", "lease", config.agent.lease, zero=True)),
        *_range("agent", "workers", config.agent.workers, 1, MAX_WORKERS),
        *telemetry_problems(config.telemetry),
    ]


def _watch_problems(w: WatchConfig) -> list[str]:
    problems = [
        *_choice("watch", "mode", w.mode, WATCH_MODES),
        *_choice("watch", "order", w.order, ORDERS),
        *_seconds("watch", "poll_interval", w.poll_interval, least=0.01),
        *_seconds("watch", "settle", w.settle, zero=True),
        *_seconds("watch", "rescan_interval", w.rescan_interval, least=0.01),
    ]
    for index, path in enumerate(w.dirs):
        problems.extend(_path_problems(f"[watch] dirs[{index}]", path))
    for index, same in repeated_folders(w.dirs):
        problems.append(f"[watch] dirs[{index}]: the same folder as dirs[{same}]; name each root once")
    for index, folder, outer in nested_folders(w.dirs):
        problems.append(
            f"[watch] dirs[{index}]: inside {folder}, a queue folder of dirs[{outer}]; put it elsewhere"
        )
    for key in ("exclude", "priority"):
        globs = getattr(w, key)
        if len(globs) > 256 or any(len(g) > 1024 or "\0" in g for g in globs):
            problems.append(f"[watch] {key}: at most 256 patterns of at most 1024 characters, without NUL")
    suffix = w.done_suffix
    if "/" in suffix or "\0" in suffix or len(os.fsencode(suffix)) > 64 or suffix in (".", ".."):
        problems.append(
            f"[watch] done_suffix: {short(suffix)} must be a name ending of at most 64 bytes, "
            "without '/' or NUL"
        )
    return problems


def nested_folders(folders: Sequence[str | os.PathLike[str]]) -> list[tuple[int, str, int]]:
    """(index, queue folder, index of its root) for each root named inside a queue folder of
    another (``R`` and ``R/underprocess``): that root's agents would take its files for theirs."""
    if len(folders) < 2:
        return []  # and the queue modules stay unloaded (a one-shot verb's start)
    from foldermon.queue.layout import STATES, real_path

    given = [Path(os.path.normpath(os.path.abspath(os.path.expanduser(d)))) for d in folders]
    named = [str(real_path(d) or d) for d in given]
    return [
        (index, folder, outer)
        for index, inner in enumerate(named)
        for outer, root in enumerate(named)
        for folder in (os.path.join(root, state) for state in STATES)
        if index != outer and Path(inner).is_relative_to(folder)
    ]


def repeated_folders(folders: Iterable[str | os.PathLike[str]]) -> list[tuple[int, int]]:
    """(index, index of its first mention) for each folder named again, spelled alike or not:
    through a symbolic link or a bind mount too (the same folder, once it exists)."""
    seen: dict[object, int] = {}
    return [
        (index, same)
        for index, folder in enumerate(folders)
        if (same := seen.setdefault(_identity(folder), index)) != index
    ]


def _identity(folder: str | os.PathLike[str]) -> object:
    try:
        st = os.stat(folder)
    except (OSError, ValueError):  # not there yet, or a name no folder can have (said elsewhere)
        return os.path.abspath(folder)
    return (st.st_dev, st.st_ino)


def _output_place_problems(config: Config) -> list[str]:
    """An ``[output] dir`` named inside a queue folder of a ``[watch] dirs`` root (as run refuses
    it, where it also sees the same folder under another name)."""
    if not config.output.dir:
        return []
    from foldermon.queue.layout import STATES

    output = Path(os.path.normpath(os.path.expanduser(config.output.dir)))
    problems = []
    for index, root in enumerate(config.watch.dirs):
        for state in STATES:
            folder = os.path.normpath(os.path.join(os.path.expanduser(root), state))
            if output.is_relative_to(folder):
                problems.append(
                    f"[output] dir {config.output.dir} is inside {folder} ([watch] dirs[{index}]): "
                    "outputs would be taken for inputs; set it outside the queue folders"
                )
    return problems


def _output_problems(o: OutputConfig) -> list[str]:
    problems = [*_check_name_template(o.name), *_choice("output", "compress", o.compress, COMPRESS)]
    if o.dir is not None:
        problems.extend(_path_problems("[output] dir", o.dir))
    return problems


def _retention_problems(config: Config) -> list[str]:
    problems = []
    for key in ("processed_max_age", "output_max_age", "failed_max_age"):
        value = getattr(config.retention, key)
        if value is not None and not (math.isfinite(value) and 0 < value <= MAX_AGE):
            problems.append(f"[retention] {key}: must be a positive age up to 100 years, got {value}")
    return problems


def _guard_problems(min_free: str) -> list[str]:
    if not min_free or parse_min_free(min_free) is not None:
        return []
    if re.fullmatch(rf"\s*{_NUMBER}\s*%\s*", min_free[:40]):
        return [
            f"[guard] min_free: {short(min_free)} is a share of the disk: give one above 0% and below 100%"
        ]
    return [f'[guard] min_free: {short(min_free)} is not a size (bytes, "500MB", "2GiB") or a share ("5%")']


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
    return [f"[{section}] {key}: must be between {low} and {high}, got {short(value)}"]


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


def short(value: object) -> str:
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


_HOST = r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*\.?"
_URL = r"(?i)https?://[^\s/?#]+(/[^\s]*)?"
_PAIR = r"\s*[^=,\s][^=,]*=[^,]*"
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
        return f"{short(value)} is not one of {', '.join(TELEMETRY_CHOICES[key])}"
    if key == "endpoint" and not re.fullmatch(_URL, value.strip()):
        return f"{short(value)} is not an http:// or https:// URL"
    pairs = value.split(",")
    if key in ("headers", "resource_attributes") and not all(re.fullmatch(_PAIR, p) for p in pairs):
        return f"{short(value)} is not a list of key=value pairs separated by commas"
    if key == "prometheus_host" and not _valid_host(value):
        return f"{short(value)} is not an IP address or host name"
    return None


def _valid_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        # Digits and dots only, yet not an address (300.1.1.1): no resolver takes it as a name.
        return bool(re.fullmatch(_HOST, host)) and not host.replace(".", "").isdigit() and len(host) <= 253
    return True


def _check_name_template(template: str) -> list[str]:  # noqa: PLR0911 - one rule per return
    hint = "use {stem}, {suffix} and {name}"
    if "\0" in template or len(template) > 200:
        return [f"[output] name: {short(template)} must be at most 200 characters, without NUL"]
    try:
        import string  # only for a configured format

        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        return [f"[output] name: {short(template)} is not a valid template ({exc}); {hint}"]
    fields = [f for _, f, _, _ in parsed if f is not None]
    # No format spec or conversion: "{stem:>999999999}" would build gigabytes per file.
    if any(f not in ("stem", "suffix", "name") for f in fields) or any(s or c for _, f, s, c in parsed if f):
        why = "only plain fields, without format specs or conversions"
        return [f"[output] name: {short(template)} is not a valid template ({why}); {hint}"]
    # Without the input's name in it, every input would write to the same output.
    if "stem" not in fields and "name" not in fields:
        return [f"[output] name: {short(template)} must contain {{stem}} or {{name}}"]
    name = template.format(stem="x", suffix=".txt", name="x.txt")
    if "/" in name or name in ("", ".", ".."):
        return [f"[output] name: {short(template)} must give a plain file name"]
    # Dot names in the output folder are the agent's own (temp outputs).
    if name.startswith("."):
        return [f"[output] name: {short(template)} must not start with '.' (dot names are the agent's)"]
    return []


# Watch settings a new watcher is needed for (order and priority are the scheduler's).
WATCHER_SETTINGS = ("mode", "poll_interval", "settle", "exclude", "done_suffix")


def restart_only_changes(old: Config, new: Config) -> list[str]:
    """The settings that differ between ``old`` and ``new`` which a reload cannot change."""
    pairs = {
        "watch.dirs": (old.watch.dirs, new.watch.dirs),
        "output.dir": (old.output.dir, new.output.dir),
        "agent.workers": (old.agent.workers, new.agent.workers),
        "agent.log_level": (old.agent.log_level, new.agent.log_level),
        # Every host serving a root must go by the same lease: it is not changed under claims.
        "agent.lease": (old.agent.lease, new.agent.lease),
        "telemetry": (old.telemetry, new.telemetry),
    }
    return [name for name, (was, now) in pairs.items() if was != now]
