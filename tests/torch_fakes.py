"""torch Datasets for the TorchDatasetSource tests (importable as ``torch_fakes.Name``)."""

from __future__ import annotations

import os

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset

from inputkit.sources.torch_dataset import worker_info


class DictDataset(Dataset):
    """Sample i: a dict of a python int, a float tensor, a 0-d tensor, a bool and an int16 array.

    ``with_name`` adds a string field, which inputkit cannot collate.
    """

    def __init__(self, n: int = 100, dim: int = 4, with_name: bool = False) -> None:
        self.n = n
        self.dim = dim
        self.with_name = with_name

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        if not 0 <= i < self.n:
            raise IndexError(i)
        sample = {"id": i, "x": torch.full((self.dim,), float(i)), "label": torch.tensor(i % 10),
                  "flag": i % 2 == 1, "arr": np.arange(3, dtype=np.int16) + i}
        if self.with_name:
            sample["name"] = f"sample-{i}"
        return sample


class TupleDataset(Dataset):
    """Sample i: (image float32 [2, 3] filled with i, label i as a python int)."""

    def __init__(self, n: int = 50) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple:
        return torch.full((2, 3), float(i)), i


class TensorDataset(Dataset):
    """Sample i: one int64 tensor [i, i + 1]."""

    def __init__(self, n: int = 30) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.tensor([i, i + 1])


class RaisesAt(DictDataset):
    """A DictDataset whose sample ``bad`` is corrupt."""

    def __init__(self, n: int = 100, bad: int = 7) -> None:
        super().__init__(n)
        self.bad = bad

    def __getitem__(self, i: int) -> dict:
        if i == self.bad:
            raise ValueError(f"sample {i} is corrupt")
        return super().__getitem__(i)


class ShapeChange(DictDataset):
    """A DictDataset whose sample ``odd`` has an ``x`` of 5 values instead of ``dim``."""

    def __init__(self, n: int = 100, odd: int = 5) -> None:
        super().__init__(n)
        self.odd = odd

    def __getitem__(self, i: int) -> dict:
        sample = super().__getitem__(i)
        if i == self.odd:
            sample["x"] = torch.zeros(self.dim + 1)
        return sample


class SelfSharded(IterableDataset):
    """Items 0 .. n-1, each worker taking its share with inputkit's worker_info()."""

    def __init__(self, n: int = 100) -> None:
        self.n = n

    def __iter__(self):
        worker_id, num_workers = worker_info()
        for i in range(worker_id, self.n, num_workers):
            yield {"id": i, "x": torch.full((3,), float(i))}


class Unsharded(IterableDataset):
    """Items 0 .. n-1 from every iterator: it does not shard (like most IterableDatasets)."""

    def __init__(self, n: int = 100) -> None:
        self.n = n

    def __iter__(self):
        for i in range(self.n):
            yield {"id": i, "x": torch.full((3,), float(i))}


class MixedScalars(Dataset):
    """Sample i: (label, weight) whose label is an int, np.int64 or a 0-d int64 tensor by turns
    (all int64), and whose weight is a float or np.float32 (float32)."""

    def __init__(self, n: int = 30) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple:
        label = (i, np.int64(i), torch.tensor(i))[i % 3]
        weight = float(i) if i % 2 else np.float32(i)
        return label, weight


class CountedDataset(DictDataset):
    """A DictDataset that appends the constructing process's pid to the file ``log`` each time it
    is built, so a test can count constructions in every process."""

    def __init__(self, n: int = 100, log: str = "") -> None:
        super().__init__(n)
        with open(log, "a") as out:  # one short append per construction: atomic across processes
            out.write(f"{os.getpid()}\n")


class WithPath(Dataset):
    """Sample i: (image float32 [2, 3] filled with i, label i, the path string of sample i)."""

    def __init__(self, n: int = 40) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple:
        return torch.full((2, 3), float(i)), i, f"images/{i:05d}.png"
