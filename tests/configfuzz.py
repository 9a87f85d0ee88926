"""Hostile configuration for the fuzz tests: strategies for parsed configs, a TOML writer, known bad files."""

from __future__ import annotations

import json
import math
from typing import Any

from hypothesis import strategies as st

from foldermon import config as cfg
from foldermon.processors import Registry

REGISTRY = Registry.load()

# Strings that have broken validation before: NUL bytes, format specs, paths and odd numbers.
NASTY = [
    "",
    "\x00",
    "a\x00b",
    "/",
    ".",
    "..",
    "{stem!s:>9999999999}",
    "{stem:{name}}",
    "{count:>999999999} {line}",
    "{0}",
    "300.1.1.1",
    "-5",
    "nan",
    "http://",
    "a=b,=c",
    "x" * 5000,
    "é\udcff",
    "(a+)+$",
]
SCALARS = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.text(max_size=20),
    st.sampled_from(NASTY),
)
VALUES = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=6,
)
_FIELDS = {name: list(kind._fields) for name, kind in cfg._SECTIONS.items()}
_DEFAULTS = {name: kind() for name, kind in cfg._SECTIONS.items()}
TEXT = st.text(max_size=20) | st.sampled_from(NASTY)


def typed(default: Any) -> st.SearchStrategy[Any]:
    """Values of the key's own type, at any size: what reaches range and format checks."""
    if isinstance(default, bool):
        return st.booleans()
    if isinstance(default, int):
        return st.integers(min_value=-(2**70), max_value=2**70) | st.integers(-3, 70000)
    if isinstance(default, float):
        return st.floats(allow_nan=True, allow_infinity=True) | st.floats(-10, 1e6)
    if isinstance(default, tuple):
        return st.lists(TEXT, max_size=3)
    return TEXT


@st.composite
def raw_configs(draw: st.DrawFn) -> dict[str, Any]:
    """A parsed config: real sections and keys (and some unknown ones), values of any type."""
    raw: dict[str, Any] = {}
    for section in draw(st.lists(st.sampled_from([*_FIELDS, "bogus"]), unique=True, max_size=4)):
        keys = draw(st.lists(st.sampled_from([*_FIELDS.get(section, []), "nope"]), unique=True, max_size=4))
        defaults = _DEFAULTS.get(section)
        raw[section] = {
            key: draw(
                typed(getattr(defaults, key)) if hasattr(defaults, key) and draw(st.booleans()) else VALUES
            )
            for key in keys
        }
    if draw(st.booleans()):
        kinds = st.sampled_from([*REGISTRY.types(), "frobnicate"])
        entry = st.fixed_dictionaries(
            {"type": kinds}, optional={"id": VALUES, "format": VALUES, "pattern": VALUES, "routes": VALUES}
        )
        raw["processors"] = draw(st.lists(entry, max_size=3))
    return raw


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return (
            "nan"
            if math.isnan(value)
            else ("inf" if value > 0 else "-inf")
            if math.isinf(value)
            else repr(value)
        )
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + "}"


def to_toml(raw: dict[str, Any]) -> str:
    lines = []
    for section, table in raw.items():
        if section == "processors":
            for entry in table:
                lines.append("[[processors]]")
                lines.extend(f"{json.dumps(k)} = {toml_value(v)}" for k, v in entry.items())
        else:
            lines.append(f"[{json.dumps(section)}]")
            lines.extend(f"{json.dumps(k)} = {toml_value(v)}" for k, v in table.items())
    return "\n".join(lines) + "\n"


HOSTILE = {
    "toml nested 50,000 deep": "x = " + "[" * 50_000 + "]" * 50_000 + "\n",
    "json nested 50,000 deep": '{"processors": ' + "[" * 50_000 + "]" * 50_000 + "}",
    "integer of 5,000 digits": "[retry]\nmax_attempts = " + "9" * 5000 + "\n",
    "NUL in output.name": '[output]\nname = "{stem}\\u0000x"\n',
    "NUL in done_suffix": '[watch]\ndone_suffix = ".d\\u0000"\n',
    "NUL in watch.dirs": '[watch]\ndirs = ["/srv/\\u0000in"]\n',
    "NUL in output.dir": '[output]\ndir = "/srv/\\u0000out"\n',
    "negative metric export interval": "[telemetry]\nmetric_export_interval = -5\n",
    "prometheus host 300.1.1.1": '[telemetry]\nprometheus_host = "300.1.1.1"\n',
    "negative sampler argument": "[telemetry]\ntraces_sampler_arg = -0.5\n",
    "NaN sampler argument": "[telemetry]\ntraces_sampler_arg = nan\n",
    "huge format width in output.name": '[output]\nname = "{stem!s:>9999999999}"\n',
    "huge format width in a processor": '[[processors]]\ntype = "line_counter"\nformat = "{count:>999999999}"\n',
    "width taken from the line": '[[processors]]\ntype = "line_counter"\nformat = "{count:{line}}"\n',
    "rescan every nanosecond": "[watch]\nrescan_interval = 1e-9\n",
    "a port past 65535": "[telemetry]\nprometheus_port = 70000\n",
    "an output name starting with a dot": '[output]\nname = ".{stem}"\n',
    "a file of 2 MB": "# " + "x" * (2 << 20) + "\n",
}
