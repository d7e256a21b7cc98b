"""Under ``failures.on_error=skip``, a bad sample costs only itself.

A ``read(indices)`` of an indexable source fails as a whole when one of its
samples is bad (a corrupt JPEG among 64). Skipping the whole work item would
drop 63 good samples with it, so the item is read again one index at a time:
the good samples leave as one chunk, in the item's order, and only the bad ones
are skipped, each with its own error (which names the file, for file sources).
Thread and process workers share this; the pool counts the outcome
(``FailureTally.read_samples``) and tells the Dispatcher which samples it drops.

Retry does not apply: this runs only under ``skip``, and each single read is one
attempt under that same policy. The processors run once, on the chunk of good
samples; if they fail, every sample of the item is skipped with their error
(a processor works on the chunk, so no single sample is to blame).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from inputkit.pipeline.chunk import Chunk
from inputkit.pipeline.failures import FailurePolicy, Skipped, call_with_policy, describe, short_error


@dataclass
class SampleRead:
    """What reading one item came to: the chunk of good samples (None when none was good),
    their indices, and for each skipped sample ``(index, error)``.

    ``ok`` says, for each index the item asked for (in its order), whether it was delivered;
    ``stopped``: the pool stopped in the middle and nothing of this item may be shipped.
    """

    chunk: Chunk | None
    indices: np.ndarray
    bad: list[tuple[int, str]] = field(default_factory=list)
    ok: list[bool] = field(default_factory=list)
    stopped: bool = False


def read_skipping(read: Callable[[np.ndarray], Any], indices: np.ndarray,
                  check: Callable[[Any, int], Chunk], finish: Callable[[Chunk], Chunk],
                  policy: FailurePolicy, where: str, stop: Any,
                  begin: Callable[[], None] | None = None) -> SampleRead:
    """Read ``indices``; if that fails, read them one by one and keep the good ones.

    ``check(raw, n)`` checks what the source returned for ``n`` indices (its schema and
    count); ``finish(chunk)`` runs the processors and checks their output. ``stop`` (an
    Event or StopFlag) ends the one-by-one reads early. ``begin()`` is called before each
    one-by-one read: each is one call of the source for ``failures.fetch_timeout``.
    """
    def attempt(call: Callable[[], Chunk]) -> Chunk:
        return call_with_policy(call, policy, where, stop, quiet=True)

    n = len(indices)
    try:
        raw = attempt(lambda: check(read(indices), n))
        good, bad, ok = indices, [], [True] * n
    except Skipped as failed:
        if n <= 1:
            return SampleRead(None, indices[:0], [(int(i), _text(failed)) for i in indices],
                              [False] * n)
        found = _one_by_one(read, indices, check, attempt, stop, begin)
        if found is None:
            return SampleRead(None, indices[:0], stopped=True)
        raw, good, bad, ok = found
        if raw is None:
            return SampleRead(None, indices[:0], bad, ok)
    try:
        chunk = attempt(lambda: finish(raw))
    except Skipped as failed:
        text = _text(failed)
        return SampleRead(None, indices[:0], _in_order(indices, [*bad, *((int(i), text)
                                                                          for i in good)]),
                          [False] * n)
    return SampleRead(chunk, good, bad, ok)


def _one_by_one(read: Callable[[np.ndarray], Any], indices: np.ndarray,
                check: Callable[[Any, int], Chunk], attempt: Callable[[Callable[[], Chunk]], Chunk],
                stop: Any, begin: Callable[[], None] | None,
                ) -> tuple[Chunk | None, np.ndarray, list[tuple[int, str]], list[bool]] | None:
    """Each index on its own: the good samples as one chunk (None if none); None once stopped."""
    parts: list[Chunk] = []
    bad: list[tuple[int, str]] = []
    ok: list[bool] = []
    for pos in range(len(indices)):
        if stop is not None and stop.is_set():
            return None
        one = indices[pos:pos + 1]
        if begin is not None:
            begin()
        try:
            parts.append(attempt(lambda one=one: check(read(one), 1)))
            ok.append(True)
        except Skipped as failed:
            bad.append((int(one[0]), _text(failed)))
            ok.append(False)
    if not parts:
        return None, indices[:0], bad, ok
    good = indices[np.array(ok, dtype=bool)]
    fields = {name: np.concatenate([p.fields[name] for p in parts]) for name in parts[0].fields}
    return check(fields, len(good)), good, bad, ok


def _in_order(indices: np.ndarray, bad: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """``bad`` sorted by where each index stands in the item."""
    where = {int(i): pos for pos, i in enumerate(indices.tolist())}
    return sorted(bad, key=lambda pair: where.get(pair[0], 0))


def _text(failed: Skipped) -> str:
    return short_error(describe(failed.error))
