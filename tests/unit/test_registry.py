"""The processor registry: type lookup, option checks, plugins from entry points."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from foldermon.errors import OptionError
from foldermon.processors import (
    BUILTINS,
    Processor,
    ProcessorSpec,
    Registry,
    SpecError,
    spec_from_table,
)
from foldermon.processors.builtin import Uppercase

ALL_BUILTINS = [
    "count_by",
    "filter",
    "line_counter",
    "line_joiner",
    "line_splitter",
    "lowercase",
    "replace",
    "strip",
    "sum",
    "tag_router",
    "uppercase",
]


def spec(kind: str, **options: Any) -> ProcessorSpec:
    """Return a spec of ``kind`` whose id is ``p1``."""
    return ProcessorSpec(kind, "p1", options)


class Echo:
    """A minimal processor that passes lines through."""

    def process(self, lines: list[str]) -> list[str]:
        """Return the lines as they came."""
        return lines

    def finish(self) -> list[str]:
        """Return nothing."""
        return []


def test_builtin_types_are_sorted_and_complete() -> None:
    """types() lists every built-in type, sorted."""
    assert Registry.builtin().types() == ALL_BUILTINS


def test_valid_spec_has_no_problems() -> None:
    """check() returns an empty list for a valid spec."""
    assert Registry.builtin().check(spec("line_counter", format="{count}")) == []


def test_unknown_type_lists_known_types() -> None:
    """An unknown type is reported with the list of known types."""
    assert Registry.builtin().check(spec("frobnicate")) == [
        'unknown type "frobnicate"; known types: ' + ", ".join(ALL_BUILTINS)
    ]


def test_misspelt_type_suggests_the_close_one() -> None:
    """A type close to a known one gets a suggestion."""
    [problem] = Registry.builtin().check(spec("uppercse"))
    assert problem.startswith('unknown type "uppercse" (did you mean "uppercase"?); known types:')


def test_unknown_option_suggests_and_lists_options() -> None:
    """A misspelt option is named, a close match suggested, the options listed."""
    assert Registry.builtin().check(spec("line_counter", fromat="x")) == [
        'unknown option "fromat" (did you mean "format"?); options of line_counter: format'
    ]


def test_unknown_option_without_close_match_lists_options() -> None:
    """An option nothing like a known one gets no suggestion, only the list."""
    assert Registry.builtin().check(spec("line_splitter", zzz=1)) == [
        'unknown option "zzz"; options of line_splitter: delimiter'
    ]


def test_wrong_value_type_names_the_option() -> None:
    """A value of the wrong type is reported as 'option "key": ...'."""
    assert Registry.builtin().check(spec("line_counter", format=3)) == ['option "format": must be a string']


def test_unknown_and_bad_options_are_all_reported() -> None:
    """check lists every problem of a spec, not just the first."""
    found = Registry.builtin().check(spec("filter", pattern=1, regx=True))
    assert found == [
        (
            'unknown option "regx" (did you mean "regex"?); '
            "options of filter: ignore_case, invert, pattern, regex"
        ),
        'option "pattern": must be a string',
    ]


def test_registry_parameter_is_not_an_option() -> None:
    """The registry a nesting type receives cannot be set from config."""
    [problem] = Registry.builtin().check(spec("tag_router", registry=None))
    assert problem.startswith('unknown option "registry"')


def test_build_returns_a_fresh_instance_each_time() -> None:
    """Every build gives a new processor, so per-file state never leaks."""
    registry = Registry.builtin()
    assert registry.build(spec("uppercase")) is not registry.build(spec("uppercase"))


def test_build_raises_option_error_listing_problems() -> None:
    """build raises an OptionError whose problems match check()."""
    registry = Registry.builtin()
    bad = spec("line_counter", format=3, fromat="")
    with pytest.raises(SpecError) as caught:
        registry.build(bad)
    assert isinstance(caught.value, OptionError)
    assert list(caught.value.problems) == registry.check(bad)
    assert caught.value.key == "fromat"


def test_build_of_unknown_type_raises_option_error_on_type() -> None:
    """An unknown type raises OptionError keyed on "type"."""
    with pytest.raises(OptionError, match="unknown type") as caught:
        Registry.builtin().build(spec("nope"))
    assert caught.value.key == "type"


def test_check_reports_a_factory_that_raises_instead_of_raising() -> None:
    """A type whose factory raises an unexpected error is a problem, not a crash."""

    def explode() -> Processor:
        raise RuntimeError("kaboom")

    registry = Registry({"explode": explode})
    assert registry.check(spec("explode")) == ["explode could not be built: RuntimeError: kaboom"]


def test_check_reports_a_factory_returning_a_non_processor() -> None:
    """A factory must return something with process() and finish()."""

    def odd() -> object:
        return 42

    registry = Registry({"odd": odd})  # type: ignore[dict-item]
    assert registry.check(spec("odd")) == ["odd gave a int, which lacks process() and finish()"]


def test_factory_taking_any_keywords_accepts_any_option() -> None:
    """A factory with **options decides itself which options it accepts."""

    def loose(**options: object) -> Processor:
        return Echo()

    assert Registry({"loose": loose}).check(spec("loose", whatever=1)) == []


def test_options_of_plain_function_factories_are_read_from_signature() -> None:
    """Any callable is a type; its keyword parameters are its options."""

    def make(*, level: int = 1) -> Processor:
        return Echo()

    assert Registry({"make": make}).check(spec("make", levle=2)) == [
        'unknown option "levle" (did you mean "level"?); options of make: level'
    ]


def test_spec_from_table_flat_and_nested_config_agree() -> None:
    """Options flat or under "config" give the same spec."""
    flat, _ = spec_from_table({"type": "line_counter", "format": "x"}, "a")
    nested, _ = spec_from_table({"type": "line_counter", "config": {"format": "x"}}, "a")
    assert flat == nested == ProcessorSpec("line_counter", "a", {"format": "x"})


def test_spec_from_table_reports_option_given_twice() -> None:
    """An option both flat and under "config" is ambiguous and reported."""
    table = {"type": "strip", "chars": "a", "config": {"chars": "b"}}
    assert spec_from_table(table, "a") == (
        None,
        ['option "chars" given both directly and under "config"'],
    )


def test_spec_from_table_requires_a_type() -> None:
    """A table without a type string is reported."""
    assert spec_from_table({"format": "x"}, "a") == (None, ['"type" must be a non-empty string'])


# Plugins, discovered for real through importlib.metadata from a dist-info on sys.path.

Install = Callable[[dict[str, str], str, str], None]

PLUGIN_SOURCE = """
class Reverse:
    def __init__(self, *, keep_empty: bool = True) -> None:
        self.keep_empty = keep_empty

    def process(self, lines):
        return [s[::-1] for s in lines if s or self.keep_empty]

    def finish(self):
        return []
"""


@pytest.fixture
def install_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Install]:
    """Return a function that installs a plugin distribution into a sys.path entry."""
    modules: list[str] = []

    def install(entry_points: dict[str, str], module: str, source: str) -> None:
        dist = tmp_path / f"{module}-1.0.dist-info"
        dist.mkdir()
        (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 1.0\n")
        lines = "".join(f"{name} = {target}\n" for name, target in entry_points.items())
        (dist / "entry_points.txt").write_text(f"[foldermon.processors]\n{lines}")
        (tmp_path / f"{module}.py").write_text(textwrap.dedent(source))
        modules.append(module)
        monkeypatch.syspath_prepend(str(tmp_path))

    yield install
    for module in modules:
        sys.modules.pop(module, None)


def test_load_discovers_entry_point_plugins(install_plugin: Install) -> None:
    """A processor type installed under foldermon.processors is known and works."""
    install_plugin({"reverse": "fm_plugin_rev:Reverse"}, "fm_plugin_rev", PLUGIN_SOURCE)
    registry = Registry.load()
    assert "reverse" in registry.types()
    assert registry.build(spec("reverse")).process(["abc", ""]) == ["cba", ""]


def test_plugin_options_are_checked_from_its_signature(install_plugin: Install) -> None:
    """A plugin's misspelt option is reported like a built-in's."""
    install_plugin({"reverse": "fm_plugin_opt:Reverse"}, "fm_plugin_opt", PLUGIN_SOURCE)
    assert Registry.load().check(spec("reverse", keep_emtpy=False)) == [
        'unknown option "keep_emtpy" (did you mean "keep_empty"?); options of reverse: keep_empty'
    ]


def test_plugin_that_fails_to_import_is_reported_at_check(install_plugin: Install) -> None:
    """A broken plugin does not stop loading; checking its type says why it fails."""
    install_plugin({"broken": "fm_plugin_bad:Thing"}, "fm_plugin_bad", "import no_such_module_x\n")
    registry = Registry.load()
    assert "broken" in registry.types()
    assert registry.check(spec("broken")) == [
        (
            'plugin for type "broken" could not be loaded: '
            "ModuleNotFoundError: No module named 'no_such_module_x'"
        )
    ]
    assert registry.check(spec("uppercase")) == []


def test_plugin_that_is_not_callable_is_reported_at_check(install_plugin: Install) -> None:
    """An entry point naming a non-callable is a problem for that type only."""
    install_plugin({"weird": "fm_plugin_val:VALUE"}, "fm_plugin_val", "VALUE = 3\n")
    [problem] = Registry.load().check(spec("weird"))
    assert problem == (
        'plugin for type "weird" could not be loaded: fm_plugin_val:VALUE is a int, not callable'
    )


def test_plugin_cannot_replace_a_builtin(install_plugin: Install) -> None:
    """An entry point named like a built-in type is ignored; the built-in stays."""
    install_plugin({"uppercase": "fm_plugin_dup:Reverse"}, "fm_plugin_dup", PLUGIN_SOURCE)
    assert isinstance(Registry.load().build(spec("uppercase")), Uppercase)


def test_builtins_mapping_is_read_only() -> None:
    """The built-in table cannot be changed at run time (no global mutable state)."""
    with pytest.raises(TypeError):
        BUILTINS["x"] = Uppercase  # type: ignore[index]
