"""The Grafana interpolation the dashboard tests rely on does what Grafana does."""

from __future__ import annotations

import pytest
from grafana_promql import TimeRange, Variable, interpolate, label_values_query


@pytest.mark.parametrize(
    ("seconds", "scrape", "interval", "rate_interval"),
    [
        (30, 1, "1s", "4s"),  # short range: four scrapes
        (3 * 3600, 15, "15s", "60s"),  # interval floored at the scrape interval
        (7 * 86400, 15, "605s", "620s"),  # long range: interval plus one scrape
    ],
)
def test_rate_interval_follows_grafanas_rule(
    seconds: int, scrape: int, interval: str, rate_interval: str
) -> None:
    """$__interval is range/points floored at the scrape interval; $__rate_interval is max(interval + scrape, 4 scrapes)."""
    macros = TimeRange(0, seconds, scrape).macros()
    assert (macros["__interval"], macros["__rate_interval"]) == (interval, rate_interval)


def test_range_macros_are_whole_seconds() -> None:
    """$__range is the range in seconds with an s, $__range_s without."""
    expr = interpolate("increase(x[$__range]) / $__range_s", {}, TimeRange(100.0, 190.4, 1).macros())
    assert expr == "increase(x[90s]) / 90"


def test_multi_value_variable_becomes_an_escaped_alternation() -> None:
    """A multi-value variable is (a|b) with regex metacharacters escaped for a PromQL string."""
    variables = {"instance": Variable(("127.0.0.1:9464", "host-b:9464"))}
    expr = interpolate('up{instance=~"$instance"}', variables, {})
    assert expr == 'up{instance=~"(127\\\\.0\\\\.0\\\\.1:9464|host-b:9464)"}'


def test_every_variable_syntax_is_replaced() -> None:
    """$v, ${v}, ${v:format} and [[v]] all interpolate."""
    variables = {"job": Variable(("a", "b")), "one": Variable(("x",), multi=False)}
    assert interpolate("$one ${one} [[one]] ${job:raw} ${job:pipe}", variables, {}) == "x x x a,b a|b"


def test_unknown_variable_is_an_error() -> None:
    """A query naming a variable the dashboard lacks cannot pass as interpolated."""
    with pytest.raises(KeyError, match=r"\$nope"):
        interpolate('up{job="$nope"}', {}, {})


@pytest.mark.parametrize(
    ("query", "parsed"),
    [
        ("label_values(job)", (None, "job")),
        ('label_values(up{job=~"a|b"}, instance)', ('up{job=~"a|b"}', "instance")),
    ],
)
def test_label_values_query_parses(query: str, parsed: tuple[str | None, str]) -> None:
    """label_values() with and without a series selector gives the selector and the label."""
    assert label_values_query(query) == parsed
