"""The CPU device stage: tensors share the batch's memory where torch can, a copy where not."""

from __future__ import annotations

import numpy as np
import torch

from inputkit.pipeline.batcher import Batch
from inputkit.pipeline.device import CpuDeviceStage
from inputkit.pipeline.queues import BoundedQueue


def _convert(fields: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    n = len(next(iter(fields.values())))
    batch = Batch(fields=fields, n=n, nbytes=sum(a.nbytes for a in fields.values()), copied=False)
    tensors, got_n, nbytes, indices = CpuDeviceStage(BoundedQueue("b", 2)).convert(batch)
    assert (got_n, nbytes, indices) == (n, batch.nbytes, None)
    return tensors


def test_a_writeable_contiguous_batch_is_shared_not_copied():
    """The usual batch takes the one-look fast path: the tensor is the batch's memory."""
    x = np.arange(24, dtype=np.float32).reshape(6, 4)
    y = np.arange(6, dtype=np.int64)
    tensors = _convert({"x": x, "y": y})
    assert tensors["x"].data_ptr() == x.ctypes.data and tensors["y"].data_ptr() == y.ctypes.data
    x[0, 0] = 99.0
    assert tensors["x"][0, 0].item() == 99.0


def test_read_only_reversed_and_strided_views_arrive_intact():
    """Arrays torch.from_numpy refuses (read-only, negative strides) are copied once; a
    positively strided view is shared. Values are exact either way (no warning: warnings
    are errors in this suite)."""
    base = np.arange(40, dtype=np.float32).reshape(10, 4)
    read_only = base.copy()
    read_only.flags.writeable = False
    reversed_view = base[::-1]
    strided = base[:, ::2]
    tensors = _convert({"r": read_only, "v": reversed_view, "s": strided})
    for name, arr in (("r", read_only), ("v", reversed_view), ("s", strided)):
        assert np.array_equal(tensors[name].numpy(), arr), name
    assert tensors["r"].data_ptr() != read_only.ctypes.data
    assert tensors["s"].data_ptr() == strided.ctypes.data
