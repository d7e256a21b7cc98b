"""What to change when a memory plan does not fit: settings that do, each one checked.

A fix is one config key of the input whose line dominates and the largest value
that fits (``queue.capacity=8``, ``queue.capacity=11GiB``, ``epoch.chunk_size=32``).
Before a fix is offered it is applied to the checked spec and the plan is made
again from the same sample sizes (``replan``), so every printed fix is a key this
input's source and worker kind take, with a value that passes the budget.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from inputkit.config.sizes import format_size, parse_size, size_setting_at_most
from inputkit.config.spec import UNBOUNDED_ITEMS, InputSpec, RunSpec
from inputkit.planning.memory_terms import BYTE_LIMIT, MemoryPlan, SampleLayout, Term

Replan = Callable[[RunSpec, dict[str, SampleLayout]], MemoryPlan]
# Counts the planner may lower (the key's end), and how each is set on an InputSpec.
_COUNTS = {
    "queue.capacity": lambda inp, n: dataclasses.replace(inp, chunk_capacity=n,
                                                         chunk_capacity_bytes=None),
    "queue.batch_capacity": lambda inp, n: dataclasses.replace(inp, batch_capacity=n,
                                                               batch_capacity_bytes=None),
    "workers.count": lambda inp, n: dataclasses.replace(inp, worker_count=n),
    "device.prefetch": lambda inp, n: dataclasses.replace(inp, device_prefetch=n),
}
_CURRENT = {"queue.capacity": lambda inp: inp.chunk_capacity,
            "queue.batch_capacity": lambda inp: inp.batch_capacity,
            "workers.count": lambda inp: inp.worker_count,
            "device.prefetch": lambda inp: inp.device_prefetch}
_LIMITS = {
    "queue.capacity": lambda inp, b: dataclasses.replace(inp, chunk_capacity=UNBOUNDED_ITEMS,
                                                         chunk_capacity_bytes=b),
    "queue.batch_capacity": lambda inp, b: dataclasses.replace(
        inp, batch_capacity=UNBOUNDED_ITEMS, batch_capacity_bytes=b),
    "workers.ray.inflight_bytes": lambda inp, b: dataclasses.replace(
        inp, ray=dataclasses.replace(inp.ray, inflight_bytes=b)),
}


def suggest_fixes(plan: MemoryPlan, spec: RunSpec, replan: Replan) -> list[str]:
    """Sentences, each with one ``key=value`` that makes ``plan`` fit: ``replan(spec, layouts)``
    makes the plan of a changed spec, and only a fix whose plan fits is offered."""
    top = plan.dominating()
    inp = next((i for i in spec.inputs if i.name == top.input), None)
    if inp is None:
        return [_GENERIC]
    tips: list[str] = []
    if plan.host_bytes <= plan.budget_bytes:  # only the GPU budget is exceeded
        tips += _count_fix(spec, plan, inp, "device.prefetch", replan)
        return tips or [f"Lower batch_size to fit memory.gpu_budget "
                        f"({format_size(plan.gpu_budget_bytes or 0)} per device), or raise it."]
    name = top.key[len(inp.key_prefix):]
    n = plan.device_count if top.per_device else 1
    if top.unit == BYTE_LIMIT and name in _LIMITS:
        tips += _limit_fix(spec, plan, inp, top, name, n, replan)
    elif name in _COUNTS:
        tips += _count_fix(spec, plan, inp, name, replan, top)
    if top.unit in ("chunks", "slots"):  # a byte limit does not shrink with the chunk
        tips += _chunk_fix(spec, plan, inp, top, replan, first=not tips)
    return tips or [_GENERIC]


_GENERIC = "Use fewer devices or a smaller batch_size, or raise memory.budget."


def _with_input(spec: RunSpec, inp: InputSpec) -> RunSpec:
    return dataclasses.replace(spec, inputs=tuple(inp if i.name == inp.name else i
                                                  for i in spec.inputs))


def _largest(low: int, high: int, ok: Callable[[int], bool]) -> int | None:
    """The largest value in ``low..high`` for which ``ok`` holds (``ok`` falls as it grows)."""
    if high < low or not ok(low):
        return None
    while low < high:
        mid = (low + high + 1) // 2
        low, high = (mid, high) if ok(mid) else (low, mid - 1)
    return low


def _count_fix(spec: RunSpec, plan: MemoryPlan, inp: InputSpec, name: str, replan: Replan,
               top: Term | None = None) -> list[str]:
    """The largest value of the count ``name`` below the current one that fits; with ``top``,
    what that term then holds in all."""
    setter = _COUNTS[name]

    def plan_at(value: int) -> MemoryPlan:
        return replan(_with_input(spec, setter(inp, value)), plan.layouts)

    best = _largest(1, _CURRENT[name](inp) - 1, lambda v: not plan_at(v).over_budget)
    if best is None:
        return []
    if top is None:
        said = f"to fit memory.gpu_budget, {format_size(plan.gpu_budget_bytes or 0)} per device"
    else:
        fixed = plan_at(best)
        held = sum(t.bytes * (fixed.device_count if t.per_device else 1) for t in fixed.terms
                   if t.input == top.input and t.stage == top.stage)
        said = f"it holds {format_size(held)} in all"
    return [f"Set {inp.key_prefix}{name}={best} or less ({said})."]


def _limit_fix(spec: RunSpec, plan: MemoryPlan, inp: InputSpec, top: Term, name: str, n: int,
               replan: Replan) -> list[str]:
    """A smaller byte limit: the room left for this term, as a round size that fits."""
    setter = _LIMITS[name]
    room = (plan.budget_bytes - (plan.host_bytes - top.bytes * n)) // n
    for attempt in (room, room * 9 // 10, room // 2):  # the round value, then with margin
        if attempt < 1:
            break
        value = size_setting_at_most(attempt)
        limit = parse_size(value, inp.key_prefix + name)
        if not replan(_with_input(spec, setter(inp, limit)), plan.layouts).over_budget:
            per = " per device" if n > 1 else ""
            return [f"Set {inp.key_prefix}{name}={value} or less (a byte limit: the {top.stage} "
                    f"then holds at most {format_size(limit)}{per})."]
    return []


def _chunk_fix(spec: RunSpec, plan: MemoryPlan, inp: InputSpec, top: Term, replan: Replan,
               first: bool) -> list[str]:
    """Smaller chunks, through the key that sets them for this source (none: no fix)."""
    layout = plan.layouts.get(inp.name)
    if layout is None or not layout.chunk_key or layout.chunk_samples <= 1:
        return []
    key = layout.chunk_key

    def variant(samples: int) -> tuple[RunSpec, dict[str, SampleLayout]]:
        if key == "epoch.chunk_size":
            changed = dataclasses.replace(inp, epoch=dataclasses.replace(inp.epoch,
                                                                         chunk_size=samples))
        else:  # source.chunk_size or source.chunk_size_max
            changed = dataclasses.replace(inp, source={**inp.source, key.split(".", 1)[1]: samples})
        sizes = dict(plan.layouts)
        if layout.source != "declared":  # a probed chunk is at least a batch (as probed_layout)
            sizes[inp.name] = dataclasses.replace(layout,
                                                  chunk_samples=max(samples, inp.batch_size))
        return _with_input(spec, changed), sizes

    best = _largest(1, layout.chunk_samples - 1, lambda v: not replan(*variant(v)).over_budget)
    if best is None:
        return []
    return [f"{'Set' if first else 'Or set'} {inp.key_prefix}{key}={best} or less (chunks of at "
            f"most {best:,} samples; {top.key} as it is)."]
