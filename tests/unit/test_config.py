"""Configuration: parsing TOML and the original JSON, type and range checks, every problem at once."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from foldermon.config import (
    AgentConfig,
    Config,
    OutputConfig,
    PipelineConfig,
    RetryConfig,
    TelemetryConfig,
    WatchConfig,
    load,
    with_overrides,
)
from foldermon.configcheck import validate
from foldermon.errors import ConfigError
from foldermon.processors import ProcessorSpec, Registry

FULL_TOML = """
[watch]
dirs = ["/srv/a", "/srv/b"]
mode = "poll"
poll_interval = 2
settle = 0.25
rescan_interval = 60.0
exclude = ["*.tmp"]
done_suffix = ".done"

[output]
dir = "/srv/out"
name = "{name}.out"

[retry]
max_attempts = 5
backoff = 1.5

[pipeline]
max_line_bytes = 4096

[agent]
log_level = "debug"
drain_timeout = 10.0

[telemetry]
trace_lines = true
line_sample_ratio = 0.5
max_line_spans_per_file = 20
endpoint = "http://collector:4318"
protocol = "http/protobuf"
prometheus_port = 9999

[[processors]]
type = "line_counter"
id = "count"
format = "Line {count}: {line}"

[[processors]]
type = "uppercase"
"""


def write(tmp_path: Path, text: str, name: str = "agent.toml") -> Path:
    """Write ``text`` to a config file in ``tmp_path`` and return its path."""
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load_text(tmp_path: Path, text: str, name: str = "agent.toml") -> Config:
    """Load ``text`` as a config file with the built-in registry."""
    return load(write(tmp_path, text, name), Registry.builtin())


def problems_of(tmp_path: Path, text: str, name: str = "agent.toml") -> list[str]:
    """Return the problems ConfigError lists for ``text``; fail if it loads."""
    with pytest.raises(ConfigError) as info:
        load_text(tmp_path, text, name)
    return info.value.problems


def only_problem(tmp_path: Path, text: str, name: str = "agent.toml") -> str:
    """Return the single problem ConfigError lists for ``text``."""
    problems = problems_of(tmp_path, text, name)
    assert len(problems) == 1, problems
    return problems[0]


def test_toml_with_every_section_parses_to_section_values(tmp_path: Path) -> None:
    """Every section and key of a full TOML file lands in the matching section field."""
    expected = Config(
        watch=WatchConfig(
            dirs=(Path("/srv/a"), Path("/srv/b")),
            mode="poll",
            poll_interval=2.0,
            settle=0.25,
            rescan_interval=60.0,
            exclude=("*.tmp",),
            done_suffix=".done",
        ),
        output=OutputConfig(dir=Path("/srv/out"), name="{name}.out"),
        retry=RetryConfig(max_attempts=5, backoff=1.5),
        pipeline=PipelineConfig(max_line_bytes=4096),
        agent=AgentConfig(log_level="debug", drain_timeout=10.0),
        telemetry=TelemetryConfig(
            trace_lines=True,
            line_sample_ratio=0.5,
            max_line_spans_per_file=20,
            endpoint="http://collector:4318",
            protocol="http/protobuf",
            prometheus_port=9999,
        ),
        processors=(
            ProcessorSpec("line_counter", "count", {"format": "Line {count}: {line}"}),
            ProcessorSpec("uppercase", "uppercase_1", {}),
        ),
    )
    assert load_text(tmp_path, FULL_TOML) == expected._replace(source=str(tmp_path / "agent.toml"))


def test_watch_dirs_are_paths(tmp_path: Path) -> None:
    """watch.dirs holds Path objects, as its type says, not the strings from the file."""
    config = load_text(tmp_path, '[watch]\ndirs = ["/srv/a"]\n')
    assert all(isinstance(d, Path) for d in config.watch.dirs)


def test_a_tilde_of_no_known_user_is_left_as_written(tmp_path: Path) -> None:
    """``~nosuchuser/x`` stays as written, as the shell leaves it, rather than failing the load."""
    config = load_text(tmp_path, '[watch]\ndirs = ["~nosuchuser-x/in"]\n[output]\ndir = "~0"\n')
    assert config.watch.dirs == (Path("~nosuchuser-x/in"),)
    assert config.output.dir == Path("~0")


def test_int_for_a_float_key_becomes_a_float(tmp_path: Path) -> None:
    """An integer given for a number of seconds is accepted and stored as a float."""
    backoff = load_text(tmp_path, "[retry]\nbackoff = 2\n").retry.backoff
    assert isinstance(backoff, float)
    assert backoff == 2.0


def test_keys_not_given_keep_their_defaults(tmp_path: Path) -> None:
    """A file setting one key leaves every other key at its default."""
    config = load_text(tmp_path, "[retry]\nmax_attempts = 7\n")
    assert config == Config(retry=RetryConfig(max_attempts=7), source=config.source)


def test_no_config_file_gives_the_defaults() -> None:
    """load(None) returns the default configuration."""
    assert load(None, Registry.builtin()) == Config()


def test_defaults_are_valid() -> None:
    """The default configuration passes validate() with no problem."""
    assert validate(Config()) == []


def test_empty_output_dir_means_the_default(tmp_path: Path) -> None:
    """output.dir = "" leaves the output folder at its default (None: <root>/output)."""
    assert load_text(tmp_path, '[output]\ndir = ""\n').output.dir is None


def test_original_json_with_options_nested_under_config(tmp_path: Path) -> None:
    """The original tool's JSON, options under "config", loads with those options."""
    text = json.dumps(
        {
            "processors": [
                {"type": "line_counter", "config": {"format": "Line {count}: {line}"}},
                {"type": "filter", "config": {"pattern": "ERROR"}},
            ]
        }
    )
    config = load_text(tmp_path, text, "pipeline.json")
    assert config.processors == (
        ProcessorSpec("line_counter", "line_counter_0", {"format": "Line {count}: {line}"}),
        ProcessorSpec("filter", "filter_1", {"pattern": "ERROR"}),
    )


def test_original_json_with_flat_options(tmp_path: Path) -> None:
    """JSON processors with options beside "type" load with those options."""
    text = json.dumps({"processors": [{"type": "line_splitter", "id": "split", "delimiter": ";"}]})
    config = load_text(tmp_path, text, "pipeline.json")
    assert config.processors == (ProcessorSpec("line_splitter", "split", {"delimiter": ";"}),)


def test_json_is_recognised_without_a_json_suffix(tmp_path: Path) -> None:
    """A file starting with "{" is read as JSON whatever its name."""
    text = json.dumps({"processors": [{"type": "uppercase"}]})
    config = load_text(tmp_path, text, "pipeline.conf")
    assert config.processors == (ProcessorSpec("uppercase", "uppercase_0", {}),)


def test_unknown_section_suggests_the_closest_name(tmp_path: Path) -> None:
    """A misspelt section is reported with a "did you mean" hint."""
    problem = only_problem(tmp_path, "[wacth]\nmode = 'poll'\n")
    assert 'unknown section "wacth"' in problem
    assert 'did you mean "watch"' in problem


def test_unknown_key_suggests_the_closest_name(tmp_path: Path) -> None:
    """A misspelt key is reported under its section with a "did you mean" hint."""
    problem = only_problem(tmp_path, "[retry]\nmax_attempt = 3\n")
    assert problem.startswith("[retry] ")
    assert 'did you mean "max_attempts"' in problem


def test_section_that_is_not_a_table_is_reported(tmp_path: Path) -> None:
    """A section given as a plain value is reported as needing to be a table."""
    assert only_problem(tmp_path, 'watch = "x"\n') == "[watch] must be a table"


@pytest.mark.parametrize(
    ("line", "section", "expected"),
    [
        ("trace_lines = 1", "telemetry", "expected true or false, got 1"),
        ('max_attempts = "3"', "retry", "expected an integer, got '3'"),
        ("max_attempts = true", "retry", "expected an integer, got True"),
        ("max_attempts = 2.5", "retry", "expected an integer, got 2.5"),
        ('backoff = "5"', "retry", "expected a number, got '5'"),
        ("backoff = false", "retry", "expected a number, got False"),
        ('exclude = "*.tmp"', "watch", "expected a list of strings, got '*.tmp'"),
        ("exclude = [1]", "watch", "expected a list of strings, got [1]"),
        ("mode = 1", "watch", "expected a string, got 1"),
        ("dir = 5", "output", "expected a string, got 5"),
    ],
)
def test_wrong_type_is_reported_with_the_expected_kind(
    tmp_path: Path, line: str, section: str, expected: str
) -> None:
    """A value of the wrong type names the section, the key and the kind it should be."""
    key = line.split(" ", 1)[0]
    assert only_problem(tmp_path, f"[{section}]\n{line}\n") == f"[{section}] {key}: {expected}"


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    """Four distinct problems in one file give four entries in ConfigError.problems."""
    text = """
[wacth]
[retry]
max_attempts = "many"
[telemetry]
line_sample_ratio = 1.5
[[processors]]
type = "nosuch"
"""
    problems = problems_of(tmp_path, text)
    assert len(problems) == 4, problems
    assert any("wacth" in p for p in problems)
    assert any("max_attempts" in p for p in problems)
    assert any("line_sample_ratio" in p for p in problems)
    assert any("nosuch" in p for p in problems)


def test_processor_problem_names_its_index_and_id(tmp_path: Path) -> None:
    """A processor's problem is prefixed with processors[i] and its id."""
    text = '[[processors]]\ntype = "uppercase"\n[[processors]]\ntype = "filter"\nid = "errors"\n'
    problem = only_problem(tmp_path, text)
    assert problem.startswith('processors[1] (id "errors"): ')
    assert 'missing required option "pattern"' in problem


def test_unknown_processor_option_is_reported(tmp_path: Path) -> None:
    """An option the processor type does not take is reported with its known options."""
    text = '[[processors]]\ntype = "line_counter"\nformt = "{count}"\n'
    problem = only_problem(tmp_path, text)
    assert problem.startswith('processors[0] (id "line_counter_0"): unknown option "formt"')
    assert 'did you mean "format"' in problem


def test_duplicate_processor_ids_are_reported(tmp_path: Path) -> None:
    """Two processors with the same id give a duplicate-id problem naming the second."""
    text = '[[processors]]\ntype = "uppercase"\nid = "p"\n[[processors]]\ntype = "lowercase"\nid = "p"\n'
    problem = only_problem(tmp_path, text)
    assert problem.startswith('processors[1] (id "p"): duplicate id')


def test_processor_without_a_type_is_reported(tmp_path: Path) -> None:
    """A processor entry lacking "type" is reported by its index."""
    problem = only_problem(tmp_path, '[[processors]]\nid = "p"\n')
    assert problem.startswith('processors[0]: needs a "type" string')


def test_processors_that_are_not_a_list_are_reported(tmp_path: Path) -> None:
    """A processors value that is not a list is reported."""
    problem = only_problem(tmp_path, json.dumps({"processors": {"type": "uppercase"}}), "p.json")
    assert problem == "processors must be a list of tables/objects"


@pytest.mark.parametrize(
    "template",
    ["{nope}", "{stem", "{0}", "{stem.nosuch}", "{stem[x]}", "{stem:d}", "{stem!z}"],
)
def test_invalid_output_name_template_is_reported(tmp_path: Path, template: str) -> None:
    """A name template that cannot be formatted is a config problem, not a crash."""
    problem = only_problem(tmp_path, f"[output]\nname = '{template}'\n")
    assert problem.startswith("[output] name: ")
    assert "is not a valid template" in problem


@pytest.mark.parametrize("template", ["out/{name}", "{stem}/{suffix}"])
def test_output_name_template_must_give_a_plain_file_name(tmp_path: Path, template: str) -> None:
    """A template whose result is a path is reported."""
    problem = only_problem(tmp_path, f"[output]\nname = '{template}'\n")
    assert problem.endswith("must give a plain file name")


@pytest.mark.parametrize("template", ["", "..", "out.txt", "{suffix}"])
def test_output_name_template_must_name_the_input(tmp_path: Path, template: str) -> None:
    """A template without {stem} or {name} would send every input to one output, so it is refused."""
    problem = only_problem(tmp_path, f"[output]\nname = '{template}'\n")
    assert problem.endswith("must contain {stem} or {name}")


def test_output_name_template_refuses_attribute_access(tmp_path: Path) -> None:
    """Fields like {stem.upper} would give odd names; only plain fields are allowed."""
    problem = only_problem(tmp_path, "[output]\nname = '{stem.upper}'\n")
    assert "only plain fields" in problem


@pytest.mark.parametrize(
    ("section", "line", "key"),
    [
        ("retry", "max_attempts = 0", "max_attempts"),
        ("retry", "backoff = -1", "backoff"),
        ("telemetry", "line_sample_ratio = 1.5", "line_sample_ratio"),
        ("telemetry", "line_sample_ratio = -0.1", "line_sample_ratio"),
        ("watch", 'mode = "x"', "mode"),
        ("watch", "poll_interval = 0", "poll_interval"),
        ("watch", "settle = -1", "settle"),
        ("watch", "rescan_interval = inf", "rescan_interval"),
        ("watch", 'done_suffix = "a/b"', "done_suffix"),
        ("pipeline", "max_line_bytes = 0", "max_line_bytes"),
        ("agent", 'log_level = "loud"', "log_level"),
        ("agent", "drain_timeout = 0", "drain_timeout"),
        ("telemetry", "max_line_spans_per_file = -1", "max_line_spans_per_file"),
    ],
)
def test_out_of_range_value_is_reported(tmp_path: Path, section: str, line: str, key: str) -> None:
    """A value of the right type but outside its allowed range is reported under its key."""
    assert only_problem(tmp_path, f"[{section}]\n{line}\n").startswith(f"[{section}] {key}: ")


@pytest.mark.parametrize(
    ("section", "line", "key"),
    [
        ("retry", "backoff = nan", "backoff"),
        ("retry", "backoff = inf", "backoff"),
        ("agent", "drain_timeout = nan", "drain_timeout"),
        ("agent", "drain_timeout = inf", "drain_timeout"),
    ],
)
def test_non_finite_seconds_are_reported(tmp_path: Path, section: str, line: str, key: str) -> None:
    """nan and inf (valid TOML floats) are rejected for durations that get scheduled."""
    assert only_problem(tmp_path, f"[{section}]\n{line}\n").startswith(f"[{section}] {key}: ")


def test_invalid_toml_reports_the_line(tmp_path: Path) -> None:
    """A TOML syntax error is one problem that names its line."""
    problem = only_problem(tmp_path, "[retry]\nmax_attempts = = 3\n")
    assert problem.startswith("invalid TOML")
    assert "line 2" in problem


def test_invalid_json_reports_line_and_column(tmp_path: Path) -> None:
    """A JSON syntax error is one problem that names its line and column."""
    problem = only_problem(tmp_path, '{\n  "processors": [,]\n}\n', "p.json")
    assert problem.startswith("invalid JSON at line 2 column 18")


def test_a_json_key_given_twice_is_a_problem_not_the_last_value(tmp_path: Path) -> None:
    """JSON keeps the last of two equal keys without a word (a second "processors" list would
    drop the first pipeline): each key given twice is reported, as TOML does."""
    text = (
        '{"processors": [{"type": "filter", "config": {"pattern": "IMPORTANT", "pattern": "x"}}],\n'
        ' "processors": [{"type": "uppercase"}]}'
    )
    with pytest.raises(ConfigError) as info:
        load(write(tmp_path, text, "p.json"), Registry.builtin())
    assert info.value.problems == [
        "the key 'pattern' is given twice in one object; give it once",
        "the key 'processors' is given twice in one object; give it once",
    ]


def test_top_level_that_is_not_an_object_is_reported(tmp_path: Path) -> None:
    """A JSON file whose top level is a list is reported, not crashed on."""
    assert only_problem(tmp_path, "[1, 2]", "p.json") == "the top level must be a table/object"


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    """A config path that does not exist gives a ConfigError saying it cannot be read."""
    with pytest.raises(ConfigError) as info:
        load(tmp_path / "absent.toml", Registry.builtin())
    assert info.value.problems[0].startswith("cannot read the config file")


def test_directory_as_config_file_is_a_config_error(tmp_path: Path) -> None:
    """A directory given as the config file gives a ConfigError, not an OSError."""
    with pytest.raises(ConfigError) as info:
        load(tmp_path, Registry.builtin())
    assert info.value.problems[0].startswith("cannot read the config file")


def test_non_utf8_file_is_a_config_error(tmp_path: Path) -> None:
    """A config file that is not UTF-8 gives a ConfigError saying it cannot be read."""
    path = tmp_path / "agent.toml"
    path.write_bytes(b"[watch]\nmode = '\xff'\n")
    with pytest.raises(ConfigError) as info:
        load(path, Registry.builtin())
    assert info.value.problems[0].startswith("cannot read the config file")


def test_config_error_names_the_file(tmp_path: Path) -> None:
    """ConfigError.source and its message name the file the problems are in."""
    path = write(tmp_path, "[retry]\nmax_attempts = 0\n")
    with pytest.raises(ConfigError) as info:
        load(path, Registry.builtin())
    assert info.value.source == str(path)
    assert str(info.value).startswith(f"{path}: ")


def test_loaded_config_remembers_its_source(tmp_path: Path) -> None:
    """A loaded Config records the file it came from."""
    path = write(tmp_path, "")
    assert load(path, Registry.builtin()).source == str(path)


def test_with_overrides_replaces_only_the_given_fields() -> None:
    """with_overrides changes the named fields and keeps the rest of each section."""
    base = Config(watch=WatchConfig(mode="poll"), retry=RetryConfig(max_attempts=9))
    changed = with_overrides(base, watch={"dirs": (Path("/w"),)}, telemetry={"trace_lines": True})
    assert changed.watch == WatchConfig(dirs=(Path("/w"),), mode="poll")
    assert changed.telemetry == TelemetryConfig(trace_lines=True)
    assert changed.retry == base.retry


def test_with_overrides_leaves_the_original_unchanged() -> None:
    """with_overrides returns a copy; the config it was given is not modified."""
    base = Config()
    with_overrides(base, retry={"max_attempts": 9})
    assert base.retry.max_attempts == 3


def test_with_overrides_keeps_the_source() -> None:
    """The copy made by with_overrides still says which file it came from."""
    base = Config(source="/etc/foldermon/agent.toml")
    overrides: dict[str, Any] = {"agent": {"log_level": "debug"}}
    assert with_overrides(base, **overrides).source == "/etc/foldermon/agent.toml"


def test_a_processor_entry_is_listed_at_its_own_place_in_the_file(tmp_path: Path) -> None:
    """A [[processors]] entry after [agent] has its problem listed after [agent]'s, not beside the
    first entry's."""
    text = (
        '[watch]\nmode = "bogus"\n[[processors]]\ntype = "frobnicate"\n'
        '[agent]\nworkers = 0\n[[processors]]\ntype = "zork"\n'
    )
    starts = [p.split()[0] for p in problems_of(tmp_path, text)]
    assert starts == ["[watch]", "processors[0]", "[agent]", "processors[1]"]


def test_a_header_inside_a_multiline_string_does_not_move_a_table(tmp_path: Path) -> None:
    """Only real table headers set the order: "[agent]" inside a string is text."""
    text = (
        '[[processors]]\ntype = "nosuch"\n[watch]\nnote = """\n[agent]\n"""\n'
        "[telemetry]\nline_sample_ratio = 2.0\n[agent]\nworkers = 0\n"
    )
    starts = [p.split()[0] for p in problems_of(tmp_path, text)]
    assert starts == ["processors[0]", "[watch]", "[telemetry]", "[agent]"]


def test_tables_set_before_the_first_header_come_first(tmp_path: Path) -> None:
    text = 'processors = [{type = "nosuch"}]\n[agent]\nworkers = 0\n'
    starts = [p.split()[0] for p in problems_of(tmp_path, text)]
    assert starts == ["processors[0]", "[agent]"]


@pytest.mark.parametrize(
    ("text", "line", "shown"),
    [
        ('[watch]\nmode = "poll"\n\nexclude = [\n', 4, "exclude = ["),  # to the end of the file
        ('[watch]\nmode = "poll"\n[output]\nname = """{stem}\n\n', 4, 'name = """{stem}'),
        ("[watch]\nexclude = [\n\n# a comment\n", 2, "exclude = ["),
        ("a = 'abc", 1, "a = 'abc"),
        ("[watch]\nexclude = [\n\n# a comment\nmode = 1\n", 2, "exclude = ["),  # stopped later on
    ],
)
def test_an_unclosed_bracket_or_string_names_the_line_it_opens_on(
    tmp_path: Path, text: str, line: int, shown: str
) -> None:
    """The parser reads on to the end of the file (or to a later line): the problem names and shows
    the line where the bracket or string that was never closed begins."""
    problem = only_problem(tmp_path, text)
    assert f"opened on line {line} is" in problem
    assert f"line {line}: {shown!r}" in problem


def test_the_default_file_is_the_system_one_for_root_and_the_per_user_one_otherwise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without --config or FOLDERMON_CONFIG: root reads /etc/foldermon/agent.toml, anyone else
    the platformdirs per-user file; a missing default file means the built-in defaults."""
    from foldermon import cli
    from foldermon import config as cfg

    monkeypatch.delenv("FOLDERMON_CONFIG", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    (tmp_path / "xdg" / "foldermon").mkdir(parents=True)
    user = write(tmp_path / "xdg" / "foldermon", "", "agent.toml")
    system = write(tmp_path, "", "system.toml")
    monkeypatch.setattr(cfg, "SYSTEM_CONFIG", system)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert cli.config_path(None) == user
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert cli.config_path(None) == system
    system.unlink()
    assert cli.config_path(None) is None  # root does not fall back to a per-user file
    monkeypatch.setenv("FOLDERMON_CONFIG", str(user))
    assert cli.config_path(None) == user
    assert cli.config_path(tmp_path / "given.toml") == tmp_path / "given.toml"


@pytest.mark.parametrize("inside", ["unprocessed", "processed/out", "failed", "underprocess/../failed/x"])
def test_an_output_folder_inside_a_queue_folder_is_a_config_problem(tmp_path: Path, inside: str) -> None:
    """check-config refuses it as run does (outputs would be taken for inputs)."""
    root = tmp_path / "root"
    text = f'[watch]\ndirs = ["{root}"]\n[output]\ndir = "{root}/{inside}"\n'
    with pytest.raises(ConfigError) as raised:
        load_text(tmp_path, text)
    assert any("outputs would be taken for inputs" in p for p in raised.value.problems)


def test_an_output_folder_beside_the_queue_folders_is_fine(tmp_path: Path) -> None:
    root = tmp_path / "root"
    for place in (root / "output", root, tmp_path / "elsewhere", root / "processed-out"):
        config = load_text(tmp_path, f'[watch]\ndirs = ["{root}"]\n[output]\ndir = "{place}"\n')
        assert validate(config) == []


@pytest.mark.parametrize(
    ("entry", "said"),
    [
        ({"type": "uppercase", "id": ""}, '"id" must be a non-empty string'),
        ({"type": "uppercase", "id": 5}, '"id" must be a non-empty string'),
        (
            {"type": "filter", "pattern": "a", "config": {"pattern": "b"}},
            'pattern given both beside and under "config"',
        ),
    ],
)
def test_a_processor_entry_that_would_be_read_some_way_silently_is_refused(
    tmp_path: Path, entry: dict[str, Any], said: str
) -> None:
    problems = problems_of(tmp_path, json.dumps({"processors": [entry]}), "p.json")
    assert any(said in p for p in problems), problems


def test_watch_dirs_with_a_nul_are_rejected_with_a_reason_not_an_exception(tmp_path: Path) -> None:
    """A NUL in one of several roots (found by the config fuzz test): a problem, not a ValueError
    from the nested-root check, which looks at the folders through the kernel."""
    from foldermon.configcheck import nested_folders

    assert nested_folders([str(tmp_path), "\x00"]) == []


@pytest.mark.parametrize("share", ["0%", "100%", "150 %"])
def test_a_min_free_share_out_of_range_is_said_as_such(tmp_path: Path, share: str) -> None:
    """A share of 0% or 100% and more is a share, not "not a size": the message says its range."""
    problem = only_problem(tmp_path, f'[guard]\nmin_free = "{share}"\n')
    assert problem == f"[guard] min_free: {share!r} is a share of the disk: give one above 0% and below 100%"


@pytest.mark.parametrize(("given", "shown"), [('"IMPORTANT"', "'IMPORTANT'"), ("null", "None"), ("[]", "[]")])
def test_a_processor_config_that_is_not_a_table_is_named(tmp_path: Path, given: str, shown: str) -> None:
    """ "config" given as a string (or null, or a list) names "config", not an option it was
    meant to hold."""
    text = f'{{"processors": [{{"type": "filter", "pattern": "x", "config": {given}}}]}}'
    problem = only_problem(tmp_path, text, "p.json")
    assert problem == f'processors[0]: "config" must be a table of options, got {shown}'
