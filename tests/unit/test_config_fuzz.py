"""Hostile configuration: whatever a file holds, loading it gives a Config or a ConfigError, and what
is accepted can be used by everything ``run`` builds from it."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from configfuzz import HOSTILE, REGISTRY, raw_configs, to_toml
from foldermon import config as cfg
from foldermon.errors import ConfigError
from foldermon.pipeline import build_pipeline
from foldermon.queue.output import output_filename
from foldermon.telemetry._exporters import resolve
from foldermon.watch import NameRules

LONG = os.environ.get("FOLDERMON_LONG") == "1"


def load_text(tmp: Path, text: str, suffix: str) -> cfg.Config | None:
    """Load through the same path as check-config and run; None when rejected with reasons."""
    path = tmp / f"fuzz{suffix}"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        return cfg.load(path, REGISTRY)
    except ConfigError as exc:
        problems = exc.problems
    assert problems, "a rejection must say why"
    assert all(isinstance(p, str) and len(p) < 2000 for p in problems)
    return None


def use_like_run(config: cfg.Config, tmp: Path) -> None:
    """What run builds from a config: paths, output names, watch rules, telemetry, the pipeline."""
    for path in (*config.watch.dirs, *([config.output.dir] if config.output.dir else [])):
        with contextlib.suppress(OSError):  # missing is fine; a ValueError (NUL) or crash is not
            os.lstat(tmp / path)
    name = output_filename(config.output.name, "data.txt")
    assert 0 < len(name) < 300
    assert "/" not in name
    assert not name.startswith(".")
    rules = NameRules.from_settings(config.watch)
    rules.excluded("data.txt")
    rules.done_target("data.txt" + config.watch.done_suffix)
    resolve(config.telemetry, {})
    pipeline = build_pipeline(config.processors, REGISTRY)
    out = pipeline.feed(["a,b,c", "IMPORTANT 1,2", ""]) + pipeline.finish()
    assert all(isinstance(line, str) and len(line) < 100_000 for line in out)


_SETTINGS = settings(
    max_examples=3000 if LONG else 300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@_SETTINGS
@given(raw=raw_configs())
def test_any_toml_config_is_accepted_usable_or_rejected_with_reasons(
    tmp_path: Path, raw: dict[str, Any]
) -> None:
    """TOML of any shape: a ConfigError listing problems, or a config that everything run builds accepts."""
    config = load_text(tmp_path, to_toml(raw), ".toml")
    event(f"accepted: {config is not None}")
    if config is not None:
        use_like_run(config, tmp_path)


@_SETTINGS
@given(raw=raw_configs())
def test_any_json_config_is_accepted_usable_or_rejected_with_reasons(
    tmp_path: Path, raw: dict[str, Any]
) -> None:
    """The same for the original tool's JSON form (NaN and Infinity included, as Python reads them)."""
    config = load_text(tmp_path, json.dumps(raw), ".json")
    if config is not None:
        use_like_run(config, tmp_path)


@_SETTINGS
@given(text=st.text(max_size=300))
def test_any_text_is_a_config_or_a_reasoned_rejection(tmp_path: Path, text: str) -> None:
    """Random bytes of text, as TOML and as JSON: never an exception other than ConfigError."""
    for suffix in (".toml", ".json"):
        config = load_text(tmp_path, text, suffix)
        if config is not None:
            use_like_run(config, tmp_path)


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_config_is_rejected_with_a_sentence(tmp_path: Path, case: str) -> None:
    """Each value that once crashed check-config, run or a reload is refused with a reason."""
    text = HOSTILE[case]
    assert load_text(tmp_path, text, ".json" if text.startswith("{") else ".toml") is None
