"""Processors: chunk transforms applied inside the workers, after fetch.

A processor is a callable ``proc(fields, rng) -> fields``: it takes one chunk's fields
(a dict of numpy arrays, all with one leading length n) and a seeded
``np.random.Generator``, and returns the chunk's new fields (the ones it changed and
the ones it kept). It works on the whole chunk at once. It may change n only by
changing every field alike. As in Caffe2's data workers, processors run in the
worker that fetched the chunk, so their cost scales with the number of workers.

A :class:`ProcessorChain` runs a list of them, seeds each step, times each step and
names the step in any error. Imports only numpy and inputkit's light modules: worker
processes load it.
"""

from inputkit.processors.builtin import Cast, Normalize, RandomCrop, RandomFlip
from inputkit.processors.chain import Processor, ProcessorChain
from inputkit.processors.loader import build_processor
from inputkit.processors.stats import (
    ProcessorStats,
    ProcessorTotals,
    Snapshot,
    merge_snapshots,
    stats_from_snapshot,
)

__all__ = [
    "Cast",
    "Normalize",
    "Processor",
    "ProcessorChain",
    "ProcessorStats",
    "ProcessorTotals",
    "RandomCrop",
    "RandomFlip",
    "Snapshot",
    "build_processor",
    "merge_snapshots",
    "stats_from_snapshot",
]
