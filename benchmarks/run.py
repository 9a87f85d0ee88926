"""Benchmarks: every figure is a ratio against a baseline measured side by side in the same run.

    python benchmarks/run.py            # full run, writes benchmarks/RESULTS.md
    python benchmarks/run.py --smoke    # tiny sizes, checks outputs only (CI)
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "tests"), str(REPO / "agent")]

from otlp_receiver import OtlpReceiver  # noqa: E402 - needs the path above

P1_CONFIG = """
[[processors]]
type = "line_counter"
format = "Line {count}: {line}"
[[processors]]
type = "uppercase"
[[processors]]
type = "filter"
pattern = "IMPORTANT"
"""
AWK = ["awk", '{s=toupper("Line " NR ": " $0); if (index(s,"IMPORTANT")) print s}']


@dataclass(frozen=True, slots=True)
class Row:
    id: str
    scenario: str
    baseline: str
    agent: str
    ratio: float
    goal: str
    met: bool


def agent_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["PYTHONPATH"] = str(REPO / "agent")
    env["FOLDERMON_CONFIG"] = os.devnull
    env.update(extra or {})
    return env


def agent(*args: str, env: dict[str, str] | None = None) -> float:
    """Run the agent CLI once; return its wall time."""
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "foldermon", *args],
        env=agent_env(env),
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - start


def best(fn: Callable[[], float], repeat: int) -> float:
    return min(fn() for _ in range(repeat))


def make_lines(path: Path, n: int) -> None:
    with path.open("w") as f:
        for i in range(n):
            f.write(f"this is an IMPORTANT line {i}\n" if i % 3 == 0 else f"ordinary log line number {i} here\n")


def awk_time(src: Path, dst: Path) -> float:
    start = time.perf_counter()
    with dst.open("wb") as out:
        subprocess.run([*AWK, str(src)], stdout=out, check=True)
    return time.perf_counter() - start


def p1_p5_p7(work: Path, lines: int, repeat: int) -> list[Row]:
    src, cfg = work / "p1.txt", work / "p1.toml"
    make_lines(src, lines)
    cfg.write_text(P1_CONFIG)
    out, ref = work / "p1.out", work / "p1.awk"

    def plain(*extra: str, env: dict[str, str] | None = None) -> float:
        return agent("process", str(src), "--output", str(out), "--config", str(cfg), *extra, env=env)

    t_awk = best(lambda: awk_time(src, ref), repeat)
    t_plain = best(plain, repeat)
    if out.read_bytes() != ref.read_bytes():
        raise SystemExit("P1: agent output differs from awk's")
    t_trace = best(lambda: plain("--trace"), repeat)
    with OtlpReceiver() as rx:
        env = {**rx.endpoint_env("grpc"), "OTEL_METRIC_EXPORT_INTERVAL": "1000"}
        t_otlp = best(lambda: plain(env=env), repeat)
        if not rx.spans():
            raise SystemExit("P7: no spans reached the receiver")
    return [
        Row("P1", f"{lines:,}-line file, counter→upper→filter", f"awk {t_awk:.2f}s", f"{t_plain:.2f}s",
            t_plain / t_awk, "<= 1.0x awk", t_plain <= t_awk),
        Row("P5", "P1 with --trace (default caps)", f"untraced {t_plain:.2f}s", f"{t_trace:.2f}s",
            t_plain / t_trace, ">= 0.5x throughput", t_plain / t_trace >= 0.5),
        Row("P7", "P1 with OTLP export to a local receiver", f"telemetry off {t_plain:.2f}s",
            f"{t_otlp:.2f}s", t_plain / t_otlp, ">= 0.95x throughput", t_plain / t_otlp >= 0.95),
    ]  # fmt: skip


def table(rows: list[Row]) -> str:
    head = "| id | scenario | baseline | agent | ratio | goal | met? |\n|---|---|---|---|---|---|---|\n"
    body = "".join(
        f"| {r.id} | {r.scenario} | {r.baseline} | {r.agent} | {r.ratio:.2f} | {r.goal} | {'yes' if r.met else 'NO'} |\n"
        for r in rows
    )
    return head + body


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes; check outputs, not timings")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="foldermon-bench-"))
    try:
        rows = p1_p5_p7(work, 2000 if args.smoke else 2_000_000, 1 if args.smoke else 3)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = table(rows)
    print(text)
    if not args.smoke:
        header = f"# Benchmark results\n\nMeasured {time.strftime('%Y-%m-%d')} on {os.cpu_count()} cores.\n\n"
        (REPO / "benchmarks" / "RESULTS.md").write_text(header + text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
