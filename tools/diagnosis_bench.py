"""Does the diagnosis's advice help? Each verdict that advises a change, on a pipeline where it
is true, then the same pipeline with the advice followed; the ratio of their rates is printed.

Rates depend on the machine and on what else runs on it, so these are measurements, not
tests (tests/test_diagnosis.py checks the judgement on stated evidence and on pipelines
whose state is forced). Each line says the verdict(s) of the first configuration, the
rate of each, their ratio and the ratio the advice should give. Rounds are interleaved
(A, B, A, B, ...) so that a change in load hits both alike, and the best round of each
counts.

    python tools/diagnosis_bench.py                   # every scenario, 3 rounds of 1.5 s
    python tools/diagnosis_bench.py --rounds 1 --seconds 1 --scenario gil

The GIL scenarios need idle cores: where the machine has none, the verdict is
CPU-bound and no worker change is advised, which the line says (``idle cores``).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # diagnosis_fakes: a GIL-releasing CPU-bound source

from inputkit import Runner  # noqa: E402
from inputkit.observe.diagnosis import diagnose, judge  # noqa: E402
from inputkit.observe.evidence import Evidence, evidence  # noqa: E402

SYN = "inputkit.sources.synthetic.SyntheticSource"


def synthetic(**source: Any) -> dict[str, Any]:
    return {"_target_": SYN, "fields": {"x": {"shape": [4]}}, "chunk_size": 64, **source}


def cfg(source: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {"source": source, "devices": "cpu", **top}


def run(config: dict[str, Any], seconds: float, pause: float = 0.0) -> tuple[float, Evidence, str]:
    """Samples/s after the first batch, the evidence over that span, and the diagnosis line."""
    with Runner(config) as runner:
        stream = runner.device(0)
        next(stream)  # start-up is over
        before = runner.stats()
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            next(stream)
            if pause:
                time.sleep(pause)  # a slow training step
        after = runner.stats()
    e = evidence(after.coordinators[0], before.coordinators[0])
    lines = diagnose(after, since=before)
    return (after.samples - before.samples) / e.span_s, e, " | ".join(lines)


@dataclass
class Scenario:
    """``first`` is the configuration the verdict is about, ``second`` the advice followed;
    ``expect``: the ratio second/first the advice should give (ideal) and the least one it
    was written for."""

    name: str
    claim: str
    first: dict[str, Any]
    second: dict[str, Any]
    expect: str
    pause: float = 0.0
    verdicts: list[str] = field(default_factory=list)


SCENARIOS = [
    Scenario("fetch", "a sleeping fetch is fetch-bound: workers.count=2 doubles the rate",
             cfg(synthetic(latency_ms=40), batch_size=64, workers={"count": 1}),
             cfg(synthetic(latency_ms=40), batch_size=64, workers={"count": 2}),
             "ideal 2x, written for > 1.4x"),
    Scenario("gil", "pure-Python fetch in threads is GIL-bound: processes run it in parallel",
             cfg(synthetic(cpu_ms=40), batch_size=64, workers={"count": 2}),
             cfg(synthetic(cpu_ms=40), batch_size=64, workers={"count": 2, "kind": "process"}),
             "ideal 2x on 2 idle cores, written for > 1.25x"),
    Scenario("gil-released", "GIL-releasing C work in threads is not GIL-bound (threads vs "
             "processes alike)",
             cfg({"_target_": "diagnosis_fakes:Hashing", "rounds": 8}, batch_size=64,
                 workers={"count": 2}),
             cfg({"_target_": "diagnosis_fakes:Hashing", "rounds": 8}, batch_size=64,
                 workers={"count": 2, "kind": "process"}),
             "about 1x: no advice to switch"),
    Scenario("batcher", "8 chunks to a batch is batcher-bound: batch-sized chunks pass as views",
             cfg(synthetic(fields={"x": {"shape": [65536]}}, chunk_size=8), batch_size=64,
                 workers={"count": 2}),
             cfg(synthetic(fields={"x": {"shape": [65536]}}, chunk_size=64), batch_size=64,
                 workers={"count": 2}),
             "1.6x to 2x measured, written for > 1.2x"),
    Scenario("hand-over", "a fetch cheaper than the hand-over is hand-over-bound: inline skips it",
             cfg(synthetic(fields={"x": {"shape": [64]}}, chunk_size=256), batch_size=256,
                 workers={"count": 2}),
             cfg(synthetic(fields={"x": {"shape": [64]}}, chunk_size=256), batch_size=256,
                 workers={"kind": "inline"}),
             "4x to 5x measured idle, written for > 1.5x"),
    Scenario("over-buffered", "a slow consumer sets the pace: queue.capacity=8 instead of 32 "
             "keeps it for a quarter of the memory",
             cfg(synthetic(fields={"x": {"shape": [16384]}}), batch_size=64,
                 memory={"budget": "1GiB"}, workers={"count": 1},
                 queue={"capacity": 32, "batch_capacity": 2}),
             cfg(synthetic(fields={"x": {"shape": [16384]}}), batch_size=64,
                 memory={"budget": "1GiB"}, workers={"count": 1},
                 queue={"capacity": 8, "batch_capacity": 2}),
             "about 1x, written for > 0.75x", pause=0.05),
    Scenario("transport", "process workers handing over 4 MiB chunks: no advice (threads were "
             "0.5x to 2x as fast, run to run)",
             cfg(synthetic(fields={"x": {"shape": [65536]}}, chunk_size=16), batch_size=16,
                 workers={"count": 2, "kind": "process"}),
             cfg(synthetic(fields={"x": {"shape": [65536]}}, chunk_size=16), batch_size=16,
                 workers={"count": 2}),
             "anywhere from 0.5x to 2x"),
]


def measure(scenario: Scenario, rounds: int, seconds: float) -> None:
    rates: dict[str, list[float]] = {"first": [], "second": []}
    idle = []
    for _ in range(rounds):
        rate, e, line = run(scenario.first, seconds, scenario.pause)
        verdict = judge(e)
        scenario.verdicts.append(verdict.kind if verdict else "none")
        idle.append(e.idle_cores)
        rates["first"].append(rate)
        if scenario.name == "gil-released" and e.gil_held is not None:
            scenario.verdicts[-1] += f" (GIL held {e.gil_held:.0%})"
        rate, _, _ = run(scenario.second, seconds, scenario.pause)
        rates["second"].append(rate)
    first, second = max(rates["first"]), max(rates["second"])
    cores = ", ".join("?" if i is None else f"{i:.1f}" for i in idle)
    print(f"{scenario.name}: {scenario.claim}\n"
          f"  verdicts: {', '.join(scenario.verdicts)}; idle cores: {cores}\n"
          f"  {first:,.0f} -> {second:,.0f} samples/s: {second / first:.2f}x "
          f"({scenario.expect})\n  last diagnosis: {line}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=1.5)
    parser.add_argument("--scenario", action="append", choices=[s.name for s in SCENARIOS],
                        help="run only these (repeatable); default: all")
    args = parser.parse_args()
    for scenario in SCENARIOS:
        if args.scenario is None or scenario.name in args.scenario:
            measure(scenario, args.rounds, args.seconds)


if __name__ == "__main__":
    main()
