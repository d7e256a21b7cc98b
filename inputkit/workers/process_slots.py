"""The shared-memory slots of one process pool: which are free, which worker holds which, which hold a chunk.

Why a module of its own: shared memory is bounded by construction, and these are the
invariants that bound it, under one lock. A worker needs a free slot to write a chunk;
the parent hands each worker one slot at a time (so it knows what a dead worker held
and takes it back); a slot that came back full stays in use until every view of it (in
the chunk queue, the batcher, a batch) has been freed, and only then goes to a worker
that has none. The pipes and the receiver (workers/processes.py) only say "worker i
sent slot s" or "worker i died"; they never touch the free list.
"""

from __future__ import annotations

import queue
import threading
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np

from inputkit.workers.shm import FieldLayout, SlotArena


class SlotHands:
    """The free slots, the slot in each worker's hand, and the slots whose views are alive.

    ``offer(index, slot)`` sends a slot to worker ``index`` (False when it cannot be
    reached: the slot goes back to the free list); ``wanted(index)`` says whether the worker
    still takes work. ``lock`` also guards the pool's list of workers, so that a slot is
    never offered to a worker being replaced.
    """

    def __init__(self, slots: int, slot_bytes: int, workers: int, *,
                 offer: Callable[[int, int], bool], wanted: Callable[[int], bool],
                 thread_name: str) -> None:
        self.slots = slots
        self.slot_bytes = slot_bytes
        self.lock = threading.Lock()
        self.arena: SlotArena | None = None
        self.closed = False
        self._offer = offer
        self._wanted = wanted
        self._free: deque[int] = deque()
        self._hands: list[int | None] = [None] * workers  # handed to a worker, not yet used
        self._in_use: dict[int, int] = {}  # slot -> bytes, for stats
        # A slot comes back when its last view is freed, which happens wherever the consumer
        # drops a batch, usually the main thread. The weak reference's callback is a C method
        # (SimpleQueue.put) so that no Python code runs there: a Ctrl-C that arrives while a
        # finalizer runs Python code is lost ("Exception ignored in ...") and the slot with it.
        # This thread does the work of giving the slot back.
        self._returned: queue.SimpleQueue[_SlotRef | None] = queue.SimpleQueue()
        self._views: dict[int, _SlotRef] = {}  # slot -> the reference that watches its views
        self._returner = threading.Thread(target=self._return_slots, name=thread_name,
                                          daemon=True)

    def open(self) -> SlotArena:
        """Create the segment; every slot starts free."""
        self.arena = SlotArena.create(self.slots, self.slot_bytes)
        self._free.extend(range(self.slots))
        return self.arena

    def start(self) -> None:
        """Start the thread that gives back slots whose views were freed."""
        self._returner.start()

    def give_all(self) -> None:
        """A slot in every worker's hand, while free ones last."""
        with self.lock:
            for index in range(len(self._hands)):
                self.give(index)

    def give(self, index: int) -> None:
        """Put a free slot in worker ``index``'s hand if it has none (lock held)."""
        if self._hands[index] is not None or not self._free or self.closed \
                or not self._wanted(index):
            return
        slot = self._free.popleft()
        self._hands[index] = slot
        if not self._offer(index, slot):  # it died: its sentinel will say so; take the slot back
            self._hands[index] = None
            self._free.appendleft(slot)

    def received(self, index: int, slot: int, layout: list[FieldLayout],
                 nbytes: int) -> dict[str, np.ndarray]:
        """Worker ``index`` filled ``slot``: views of its fields, the slot in use until every
        view is freed, and a fresh slot in the worker's hand."""
        arena = self.arena
        assert arena is not None  # the pool checks it started before a chunk is read
        holder, fields = arena.view(slot, layout)
        with self.lock:
            self._in_use[slot] = nbytes
            # The slot goes back to the workers when every view of it has been freed.
            self._views[slot] = _SlotRef(holder, self._returned.put, slot)
            self._hands[index] = None
            self.give(index)
        del holder
        return fields

    def take_back(self, index: int) -> None:
        """Worker ``index`` died: the slot in its hand (unused, or holding a chunk never read)
        is free again."""
        with self.lock:
            slot = self._hands[index]
            if slot is not None:
                self._free.append(slot)
                self._hands[index] = None

    def scarce(self, workers: int) -> bool:
        """Fewer free than one per worker, plus two (see ProcessWorkerPool.slots_scarce)."""
        with self.lock:
            return self.slots - len(self._in_use) < workers + 2

    def in_use(self) -> tuple[int, int]:
        """Slots holding a chunk the pipeline still views, and their bytes."""
        with self.lock:
            in_use = dict(self._in_use)
        return len(in_use), sum(in_use.values())

    def stop(self, timeout: float) -> bool:
        """End the returner thread; False when it did not end within ``timeout``."""
        self._returned.put(None)
        if self._returner.ident is None:
            return True
        self._returner.join(timeout)
        return not self._returner.is_alive()

    @property
    def returner_name(self) -> str:
        return self._returner.name

    def close(self) -> bool:
        """Hand out no more slots; False when already closed. The caller closes its pipes,
        then :meth:`free`."""
        with self.lock:
            if self.closed:
                return False
            self.closed = True
            return True

    def free(self) -> None:
        """Unmap the segment (the kernel frees it with the last process that maps it)."""
        if self.arena is not None:
            self.arena.close()

    def _return_slots(self) -> None:
        """The returner thread: give back each slot whose last view was freed, until stop()."""
        while (ref := self._returned.get()) is not None:
            self._release(ref.slot)

    def _release(self, slot: int) -> None:
        """Every view of ``slot`` is gone: give it to a worker that has none."""
        with self.lock:
            self._views.pop(slot, None)
            self._in_use.pop(slot, None)
            if self.closed:
                return
            self._free.append(slot)
            for index in range(len(self._hands)):
                if self._hands[index] is None:
                    self.give(index)
                    if not self._free:
                        break


class _SlotRef(weakref.ref):  # type: ignore[type-arg]
    """A weak reference to the array every view of one slot keeps alive, and that slot."""

    __slots__ = ("slot",)

    def __init__(self, holder: Any, callback: Callable[[Any], None], slot: int) -> None:
        super().__init__(holder, callback)
        self.slot = slot

    def __new__(cls, holder: Any, callback: Callable[[Any], None], slot: int) -> _SlotRef:
        return super().__new__(cls, holder, callback)
