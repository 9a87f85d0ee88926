"""The built-in processors: defaults, options, per-file state and bad options."""

from __future__ import annotations

from typing import Any

import pytest

from foldermon.errors import OptionError
from foldermon.processors import Processor, ProcessorSpec, Registry


def make(kind: str, **options: Any) -> Processor:
    """Build a fresh built-in processor of ``kind``, as a pipeline does per file."""
    return Registry.builtin().build(ProcessorSpec(kind, kind, options))


def problems(kind: str, **options: Any) -> list[str]:
    """Return what the registry finds wrong with a ``kind`` spec."""
    return Registry.builtin().check(ProcessorSpec(kind, kind, options))


def run(processor: Processor, *batches: list[str]) -> list[str]:
    """Feed ``batches`` to ``processor``, then finish it; return all output."""
    out: list[str] = []
    for batch in batches:
        out += processor.process(batch)
    return out + processor.finish()


# line_counter


def test_line_counter_default_format_numbers_from_one() -> None:
    """The default format is the original "[{count}] {line}", counting from 1."""
    assert run(make("line_counter"), ["a", "b"]) == ["[1] a", "[2] b"]


@pytest.mark.parametrize(
    "template",
    ['He said "{line}" \\ {{x}} #{count}', "{line}|{line}", "'{count}'", "\t{count}\n{line}", "{count}"],
)
def test_line_counter_compiled_template_matches_str_format(template: str) -> None:
    """Quotes, backslashes, escaped braces and repeated fields render exactly as str.format would."""
    lines = ["a", 'q"uote', "back\\slash", "{brace}"]
    expected = [template.format(count=i, line=s) for i, s in enumerate(lines, 1)]
    assert run(make("line_counter", format=template), lines) == expected


def test_line_counter_continues_across_batches() -> None:
    """The count carries on from one batch to the next within a file."""
    assert run(make("line_counter"), ["a"], ["b", "c"]) == ["[1] a", "[2] b", "[3] c"]


def test_line_counter_restarts_for_each_file() -> None:
    """A new instance (a new file) counts from 1 again."""
    run(make("line_counter"), ["a", "b"])
    assert run(make("line_counter"), ["c"]) == ["[1] c"]


@pytest.mark.parametrize(
    "template",
    [
        "Line {count}: {line}",
        "{line} #{count}",
        "100% {line}",
        "%d {count} %s",
        "{count}",
        "only text {{braces}}",
        "{count:04d}|{line!r}",
        "{line}{line}{count}",
    ],
)
def test_line_counter_matches_str_format_for_any_template(template: str) -> None:
    """Every template renders exactly as str.format would, fast path or not."""
    lines = ["x", "%s y", "{z}"]
    expected = [template.format(count=i, line=s) for i, s in enumerate(lines, 1)]
    assert run(make("line_counter", format=template), lines[:1], lines[1:]) == expected


def test_line_counter_rejects_unknown_field() -> None:
    """A field other than {count} and {line} is a config error naming it."""
    assert problems("line_counter", format="{foo} {line}") == [
        'option "format": unknown field {foo}; fields: {count}, {line}'
    ]


def test_line_counter_rejects_positional_field() -> None:
    """A positional {} field is a config error, not a failure mid-file."""
    assert problems("line_counter", format="{} {line}") == [
        'option "format": positional field {} not allowed; fields: {count}, {line}'
    ]


def test_line_counter_rejects_unbalanced_braces() -> None:
    """A template str.format cannot parse is reported as invalid."""
    assert problems("line_counter", format="[{count] {line}")[0].startswith(
        'option "format": invalid format string'
    )


def test_line_counter_rejects_non_string_format() -> None:
    """A format that is not a string is a config error."""
    assert problems("line_counter", format=3) == ['option "format": must be a string']


def test_line_counter_rejects_bad_format_spec() -> None:
    """A format spec that cannot apply to the count fails at build time."""
    with pytest.raises(OptionError, match="format"):
        make("line_counter", format="{count:q}")


# uppercase, lowercase


def test_uppercase_upper_cases_every_line() -> None:
    """uppercase turns every line into upper case."""
    assert run(make("uppercase"), ["abc", "Déjà vu"]) == ["ABC", "DÉJÀ VU"]


def test_lowercase_lower_cases_every_line() -> None:
    """lowercase turns every line into lower case."""
    assert run(make("lowercase"), ["ABC", "ÉTÉ"]) == ["abc", "été"]


@pytest.mark.parametrize("kind", ["uppercase", "lowercase"])
def test_case_change_keeps_undecodable_bytes(kind: str) -> None:
    """Bytes that are not UTF-8 (lone surrogates) come back as the same bytes."""
    raw = b"\xe9\xff\x80"
    line = raw.decode("utf-8", "surrogateescape")
    [out] = make(kind).process([line])
    assert out.encode("utf-8", "surrogateescape") == raw


def test_uppercase_changes_ascii_around_undecodable_bytes() -> None:
    """ASCII next to undecodable bytes is upper-cased while the bytes survive."""
    line = b"caf\xe9".decode("utf-8", "surrogateescape")
    [out] = make("uppercase").process([line])
    assert out.encode("utf-8", "surrogateescape") == b"CAF\xe9"


def test_case_processors_take_no_options() -> None:
    """An option given to uppercase is reported as unknown."""
    assert problems("uppercase", pattern="x") == ['unknown option "pattern"; uppercase takes no options']


# filter

LINES = ["Error: disk", "error: net", "ok", "WARNING: x"]


def test_filter_keeps_lines_containing_pattern_case_sensitively() -> None:
    """By default the pattern is a case-sensitive substring."""
    assert run(make("filter", pattern="rror"), LINES) == ["Error: disk", "error: net"]
    assert run(make("filter", pattern="Error"), LINES) == ["Error: disk"]


def test_filter_ignore_case_matches_any_case() -> None:
    """ignore_case matches a plain pattern regardless of case."""
    assert run(make("filter", pattern="ERROR", ignore_case=True), LINES) == LINES[:2]


def test_filter_invert_keeps_non_matching_lines() -> None:
    """invert keeps the lines that do not contain the pattern."""
    assert run(make("filter", pattern="rror", invert=True), LINES) == ["ok", "WARNING: x"]


def test_filter_invert_with_ignore_case() -> None:
    """invert and ignore_case combine for plain patterns."""
    assert run(make("filter", pattern="ERROR", invert=True, ignore_case=True), LINES) == LINES[2:]


def test_filter_regex_searches_anywhere_in_the_line() -> None:
    """regex treats the pattern as a regular expression searched in the line."""
    assert run(make("filter", pattern=r"^\w+:", regex=True), ["a: b", " c: d"]) == ["a: b"]


def test_filter_regex_does_not_treat_pattern_as_literal() -> None:
    """Without regex, regex metacharacters are plain text."""
    assert run(make("filter", pattern="a.c"), ["abc", "a.c"]) == ["a.c"]


def test_filter_regex_with_ignore_case_and_invert() -> None:
    """regex, ignore_case and invert combine."""
    kept = run(make("filter", pattern="^error", regex=True, ignore_case=True, invert=True), LINES)
    assert kept == ["ok", "WARNING: x"]


def test_filter_bad_regex_names_pattern() -> None:
    """A regex that does not compile is an error on the pattern option."""
    [problem] = problems("filter", pattern="(", regex=True)
    assert problem.startswith('option "pattern": invalid regular expression')


def test_filter_bad_regex_raises_option_error_on_build() -> None:
    """Building with a bad regex raises OptionError keyed on pattern."""
    with pytest.raises(OptionError) as caught:
        make("filter", pattern="[", regex=True)
    assert caught.value.key == "pattern"


def test_filter_requires_pattern() -> None:
    """filter without a pattern is reported as missing it."""
    assert problems("filter") == ['missing required option "pattern"']


@pytest.mark.parametrize("key", ["regex", "ignore_case", "invert"])
def test_filter_flags_must_be_booleans(key: str) -> None:
    """A flag given as a string is a config error naming it."""
    assert problems("filter", pattern="x", **{key: "yes"}) == [f'option "{key}": must be true or false']


# line_splitter


def test_line_splitter_strips_parts_and_drops_empty_ones() -> None:
    """Each non-empty stripped part becomes a line; empty parts disappear."""
    assert run(make("line_splitter"), ["a, b,, ,c ", ""]) == ["a", "b", "c"]


def test_line_splitter_custom_delimiter() -> None:
    """delimiter chooses what to split on."""
    assert run(make("line_splitter", delimiter=";"), ["a;b,c"]) == ["a", "b,c"]


def test_line_splitter_rejects_empty_delimiter() -> None:
    """An empty delimiter cannot split and is a config error."""
    assert problems("line_splitter", delimiter="") == ['option "delimiter": must be a non-empty string']


# line_joiner


def test_line_joiner_joins_pairs_with_default_delimiter() -> None:
    """Lines are joined two by two with " | "."""
    assert run(make("line_joiner"), ["a", "b", "c", "d"]) == ["a | b", "c | d"]


def test_line_joiner_pairs_span_batches() -> None:
    """A line left over at the end of a batch pairs with the next batch's first."""
    assert run(make("line_joiner"), ["a"], ["b", "c"], ["d"]) == ["a | b", "c | d"]


def test_line_joiner_flushes_odd_last_line() -> None:
    """An odd last line is emitted by finish, not lost."""
    joiner = make("line_joiner")
    assert joiner.process(["a", "b", "c"]) == ["a | b"]
    assert joiner.finish() == ["c"]


def test_line_joiner_finish_is_empty_for_even_count() -> None:
    """With an even number of lines, finish has nothing left."""
    joiner = make("line_joiner")
    joiner.process(["a", "b"])
    assert joiner.finish() == []


def test_line_joiner_custom_delimiter() -> None:
    """delimiter sets the separator between joined lines."""
    assert run(make("line_joiner", delimiter="+"), ["a", "b"]) == ["a+b"]


# strip


def test_strip_removes_surrounding_whitespace_by_default() -> None:
    """strip with no chars removes leading and trailing whitespace."""
    assert run(make("strip"), ["  a b \t", "c"]) == ["a b", "c"]


def test_strip_removes_given_chars() -> None:
    """chars selects which characters to strip."""
    assert run(make("strip", chars="#-"), ["#-a-#", " b "]) == ["a", " b "]


def test_strip_rejects_non_string_chars() -> None:
    """chars must be a string when given."""
    assert problems("strip", chars=1) == ['option "chars": must be a string']


# replace


def test_replace_substitutes_every_match_by_default() -> None:
    """replace applies re.sub to every match in the line."""
    assert run(make("replace", pattern=r"\d+", replacement="#"), ["a1b22"]) == ["a#b#"]


def test_replace_default_replacement_deletes_matches() -> None:
    """The default replacement is empty, deleting the matches."""
    assert run(make("replace", pattern=r"\s+"), ["a b  c"]) == ["abc"]


def test_replace_count_limits_replacements() -> None:
    """count replaces only the first N matches of each line."""
    assert run(make("replace", pattern="a", replacement="b", count=1), ["aaa", "a"]) == [
        "baa",
        "b",
    ]


def test_replace_supports_group_references() -> None:
    """The replacement may refer to the pattern's groups."""
    out = run(make("replace", pattern=r"(\w+)=(?P<v>\w+)", replacement=r"\g<v>=\1"), ["k=v"])
    assert out == ["v=k"]


def test_replace_rejects_reference_to_missing_group() -> None:
    """A group reference the pattern does not have is caught at build time."""
    [problem] = problems("replace", pattern="(a)", replacement=r"\2")
    assert problem.startswith('option "replacement": invalid replacement')


def test_replace_rejects_bad_pattern() -> None:
    """A pattern that does not compile is an error on the pattern option."""
    [problem] = problems("replace", pattern="a(")
    assert problem.startswith('option "pattern": invalid regular expression')


@pytest.mark.parametrize("count", [-1, True, "2"])
def test_replace_count_must_be_a_non_negative_integer(count: object) -> None:
    """count accepts only integers >= 0."""
    assert problems("replace", pattern="a", count=count) == ['option "count": must be a non-negative integer']


# count_by


def test_count_by_passes_lines_through_unchanged() -> None:
    """count_by returns each batch as it came."""
    batch = ["a,1", "b,2"]
    assert make("count_by", field=0).process(batch) == batch


def test_count_by_summarises_in_first_seen_order() -> None:
    """At end of file, one line per key in first-seen order with its count."""
    counter = make("count_by", field=0)
    counter.process(["b,1", "a,2", "b,3"])
    counter.process(["c,4", "a,5"])
    assert counter.finish() == ["b: 2", "a: 2", "c: 1"]


def test_count_by_strips_keys_and_uses_field_and_delimiter() -> None:
    """The key is the stripped field at the given index."""
    counter = make("count_by", field=1, delimiter=";")
    counter.process(["x; a ;1", "y;a", "z;b"])
    assert counter.finish() == ["a: 2", "b: 1"]


def test_count_by_counts_short_lines_under_empty_key() -> None:
    """Lines without the field count under the empty key, so counts add up."""
    counter = make("count_by", field=2)
    counter.process(["a,b,c", "short", "a,b"])
    assert counter.finish() == ["c: 1", ": 2"]


def test_count_by_custom_format() -> None:
    """format renders each summary line with {key} and {count}."""
    counter = make("count_by", field=0, format="{count:>3} x {key}")
    counter.process(["a", "a"])
    assert counter.finish() == ["  2 x a"]


def test_count_by_state_is_per_file() -> None:
    """A new instance starts with no counts."""
    run(make("count_by", field=0), ["a"])
    assert run(make("count_by", field=0), ["b"]) == ["b", "b: 1"]


def test_count_by_requires_field() -> None:
    """count_by without a field is reported as missing it."""
    assert problems("count_by") == ['missing required option "field"']


def test_count_by_rejects_unknown_format_field() -> None:
    """The summary format may only use {key} and {count}."""
    assert problems("count_by", field=0, format="{sum}") == [
        'option "format": unknown field {sum}; fields: {key}, {count}'
    ]


# sum


def test_sum_passes_lines_through_and_emits_integer_total() -> None:
    """sum returns lines unchanged and, at the end, the total of the field."""
    assert run(make("sum", field=1), ["a,1", "b, 2 "], ["c,39"]) == [
        "a,1",
        "b, 2 ",
        "c,39",
        "sum: 42",
    ]


def test_sum_adds_decimal_values_as_float() -> None:
    """Decimal values make the total a float."""
    summer = make("sum", field=0)
    summer.process(["1.5", "2"])
    summer.process(["3"])
    assert summer.finish() == ["sum: 6.5"]


def test_sum_reports_skipped_and_counted_values() -> None:
    """Missing, non-numeric and non-finite fields are skipped and counted."""
    summer = make("sum", field=1, format="{sum} from {count}, skipped {skipped}")
    summer.process(["a,1", "b", "c,x", "d,nan", "e,inf", "f,2.5", "g,"])
    assert summer.finish() == ["3.5 from 2, skipped 5"]


def test_sum_of_empty_file_is_zero() -> None:
    """An empty file still gets a summary line."""
    assert make("sum", field=0).finish() == ["sum: 0"]


def test_sum_format_spec_rounds() -> None:
    """A format spec such as {sum:.2f} applies to the total."""
    assert run(make("sum", field=0, format="{sum:.2f}"), ["0.1", "0.2"]) == ["0.1", "0.2", "0.30"]


def test_sum_rejects_format_that_fails_for_decimal_totals() -> None:
    """{sum:d} would fail once a decimal value appears, so it is refused up front."""
    [problem] = problems("sum", field=0, format="{sum:d}")
    assert problem.startswith('option "format": invalid format string')


def test_sum_rejects_negative_field() -> None:
    """field must be a non-negative index."""
    assert problems("sum", field=-1) == ['option "field": must be a non-negative integer']


# tag_router

ROUTES: dict[str, Any] = {
    "ERROR": {"type": "uppercase"},
    "DROP": {"type": "filter", "pattern": "#"},
}


def test_tag_router_sends_tagged_lines_through_their_route() -> None:
    """Lines whose tag has a route are processed by it; others pass unchanged."""
    router = make("tag_router", routes=ROUTES)
    out = router.process(["ERROR,disk full", "INFO,ok", " DROP ,x", "DROP,#keep"])
    assert out == ["ERROR,DISK FULL", "INFO,ok", "DROP,#keep"]


def test_tag_router_keeps_input_order_when_routes_change_line_counts() -> None:
    """A route that splits lines puts its output where its input was."""
    routes = {"S": {"type": "line_splitter", "delimiter": ";"}, "U": {"type": "uppercase"}}
    router = make("tag_router", routes=routes, delimiter=":")
    out = router.process(["S:a;b", "x:y", "U:c", "S:d", "U:e", "U:f"])
    assert out == ["S:a", "b", "x:y", "U:C", "S:d", "U:E", "U:F"]


def test_tag_router_uses_tag_field_and_delimiter() -> None:
    """tag_field and delimiter select where the tag is read."""
    router = make("tag_router", routes={"b": {"type": "uppercase"}}, tag_field=1, delimiter="|")
    assert router.process(["a|b|c", "b|a|c", "a"]) == ["A|B|C", "b|a|c", "a"]


def test_tag_router_route_state_spans_batches() -> None:
    """Each route has one processor for the whole file, fed only its lines."""
    router = make("tag_router", routes={"N": {"type": "line_counter"}})
    assert router.process(["N,a", "x", "N,b"]) == ["[1] N,a", "x", "[2] N,b"]
    assert router.process(["N,c"]) == ["[3] N,c"]


def test_tag_router_emits_routes_finish_output_at_finish() -> None:
    """What a route holds back (a joiner's odd line) comes out at finish."""
    router = make("tag_router", routes={"J": {"type": "line_joiner"}})
    assert router.process(["J,1", "J,2", "J,3", "other"]) == ["J,1 | J,2", "other"]
    assert router.finish() == ["J,3"]


def test_tag_router_accepts_options_nested_under_config() -> None:
    """A route may give its options under "config", as the original JSON did."""
    routes = {"N": {"type": "line_counter", "config": {"format": "{count}:{line}"}}}
    assert run(make("tag_router", routes=routes), ["N,a"]) == ["1:N,a"]


def test_tag_router_without_routes_passes_lines_unchanged() -> None:
    """With no routes the router is a no-op, as the original was."""
    assert run(make("tag_router"), ["ERROR,x", "y"]) == ["ERROR,x", "y"]


def test_tag_router_state_is_per_file() -> None:
    """A new router builds new route processors, so a route's counter restarts."""
    routes = {"N": {"type": "line_counter"}}
    run(make("tag_router", routes=routes), ["N,a"])
    assert run(make("tag_router", routes=routes), ["N,b"]) == ["[1] N,b"]


def test_tag_router_reports_unknown_route_type_with_path() -> None:
    """A route of unknown type is reported under routes.<tag>."""
    [problem] = problems("tag_router", routes={"ERROR": {"type": "x"}})
    assert problem.startswith('routes.ERROR: unknown type "x"; known types: count_by, filter')


def test_tag_router_reports_every_bad_route() -> None:
    """Bad options of nested routes and malformed routes are all reported."""
    routes = {
        "A": {"type": "line_counter", "format": 1},
        "B": {"type": "line_counter", "config": {"fromat": "x"}},
        "C": "uppercase",
        "D": {"type": "uppercase"},
    }
    assert problems("tag_router", routes=routes) == [
        'routes.A: option "format": must be a string',
        ('routes.B: unknown option "fromat" (did you mean "format"?); options of line_counter: format'),
        'routes.C: must be a table with a "type" key',
    ]


def test_tag_router_bad_route_raises_option_error_on_build() -> None:
    """Building a router with a bad route raises OptionError keyed on routes."""
    with pytest.raises(OptionError) as caught:
        make("tag_router", routes={"E": {"type": "nope"}})
    assert caught.value.key == "routes"


def test_tag_router_rejects_routes_that_are_not_a_table() -> None:
    """routes must map tags to configs."""
    assert problems("tag_router", routes=["ERROR"]) == [
        'option "routes": must be a table of tag = processor config'
    ]


@pytest.mark.parametrize(
    ("kind", "options"),
    [
        ("replace", {"pattern": "a", "count": 2**63}),
        ("sum", {"field": 10**30}),
        ("count_by", {"field": 2**64}),
        ("tag_router", {"tag_field": 2**63, "routes": {}}),
    ],
)
def test_an_index_or_count_too_big_for_python_is_refused_when_checked(
    kind: str, options: dict[str, Any]
) -> None:
    """Larger than the largest index, it would fail every line with OverflowError at run time."""
    found = problems(kind, **options)
    assert any("must be at most" in p for p in found), found
