"""What the batcher pulls: a stream of chunks and the messages that punctuate it.

Every worker kind hands the batcher one of these. Threaded kinds (thread, process, Ray)
make chunks ahead of need into the chunk queue, which *is* their stream (a prefetch
queue: :class:`~inputkit.pipeline.queues.BoundedQueue` has this ``get``). Inline, the stream is
the inline pool itself: its ``get`` fetches (or reads the next work item) in the
caller's thread and returns what that made, with no queue in between. Either way the
batcher (:meth:`inputkit.pipeline.batcher.Batcher.pull`) sees the same four things, and the end
of an epoch is handled once, there.
"""

from __future__ import annotations

import threading
from typing import Any, Protocol


class ChunkStream(Protocol):
    """A source of chunks for the batcher."""

    def get(self, stop: threading.Event | None = None) -> Any:
        """The next item, in order: a :class:`~inputkit.pipeline.chunk.Chunk` (n > 0 samples), an
        :class:`~inputkit.pipeline.dispatcher.EpochEnd` (index-range work: every sample of the epoch came
        before it), ``messages.END`` (nothing follows), or a ``messages.Failure`` (the
        input failed; nothing follows). Raises :class:`~inputkit.pipeline.queues.QueueClosed` once
        the stream was stopped or closed (or ``stop`` is set while waiting)."""
