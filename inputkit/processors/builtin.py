"""Built-in processors: vectorized numpy over the whole chunk, no per-sample Python.

Each takes the ``field`` it transforms and returns a new fields dict in which only
that field is replaced; input arrays are never modified. Axes (``axis``) index the
*per-sample* shape: ``-1`` is the last axis (channels of HWC images), ``0`` the first
(channels of CHW images). Shape errors at run time are SourceErrors naming the
processor and the field; bad arguments are ValueError/TypeError (ConfigError from
a config).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from inputkit.errors import SourceError

Fields = dict[str, np.ndarray]
_LAYOUTS = {"HWC": (0, 1), "CHW": (1, 2), "HW": (0, 1)}  # per-sample (height, width) axes


class _FieldProcessor:
    uses_rng = True

    def __init__(self, field: str) -> None:
        if not isinstance(field, str) or not field:
            raise ValueError(f"field must be a field name (a non-empty string), got {field!r}")
        self.field = field

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"

    def _get(self, fields: Fields) -> np.ndarray:
        try:
            return fields[self.field]
        except KeyError:
            raise SourceError(type(self).__name__, f"is not in the chunk (its fields: "
                              f"{', '.join(sorted(fields)) or 'none'}); check the processor's "
                              "field key", field=self.field) from None

    def _axis(self, x: np.ndarray, axis: int) -> int:
        """The array axis of per-sample ``axis``, or a SourceError if the sample has no such axis."""
        ndim = x.ndim - 1
        if not -ndim <= axis < ndim:
            raise SourceError(type(self).__name__, f"has per-sample shape {list(x.shape[1:])}, "
                              f"which has no axis {axis}", field=self.field)
        return axis + 1 if axis >= 0 else x.ndim + axis

    def _replace(self, fields: Fields, value: np.ndarray) -> Fields:
        out = dict(fields)
        out[self.field] = value
        return out


class Normalize(_FieldProcessor):
    """``(x - mean) / std`` in ``dtype`` (a float dtype), per channel along per-sample ``axis``.

    ``mean`` and ``std`` are numbers, or lists with one value per channel (the size of
    ``axis``, the last per-sample axis by default: HWC; use ``axis: 0`` for CHW).
    """

    uses_rng = False

    def __init__(self, field: str, mean: Any, std: Any, dtype: str = "float32", axis: int = -1) -> None:
        super().__init__(field)
        self.dtype = _dtype(dtype)
        if self.dtype.kind != "f":
            raise ValueError(f"dtype must be a float dtype (float32, float16, float64), got {dtype!r}")
        if isinstance(axis, bool) or not isinstance(axis, int):
            raise TypeError(f"axis must be an int, got {axis!r}")
        self.axis = axis
        self.mean = _stat("mean", mean)
        self.std = _stat("std", std)
        if (self.std == 0).any() or not np.isfinite(self.std).all():
            raise ValueError(f"std must be finite and non-zero, got {std!r}")
        if self.mean.size > 1 and self.std.size > 1 and self.mean.size != self.std.size:
            raise ValueError(f"mean has {self.mean.size} values but std has {self.std.size}; give one "
                             "value per channel to both (or a single number)")
        self._channels = max(self.mean.size, self.std.size)
        self._mean = self.mean.astype(self.dtype)
        self._std = self.std.astype(self.dtype)
        self._cache: tuple[tuple[int, ...], np.ndarray, np.ndarray] | None = None

    def __call__(self, fields: Fields, rng: np.random.Generator | None = None) -> Fields:
        x = self._get(fields)
        if x.dtype.kind not in "biuf":
            raise SourceError("Normalize", f"has dtype {x.dtype}; Normalize needs bool, integer or "
                              "float values", field=self.field)
        if self._channels > 1:
            mean, std = self._expanded(x)
        else:
            mean, std = self._mean.reshape(()), self._std.reshape(())
        out = x.astype(self.dtype)  # a copy: converting first, then working in place, is fastest
        np.subtract(out, mean, out=out)
        np.divide(out, std, out=out)
        return self._replace(fields, out)

    def __getstate__(self) -> dict[str, Any]:
        return {**vars(self), "_cache": None}

    def _expanded(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """mean and std shaped to broadcast against ``x``, cached per per-sample shape.

        With few values after the channel axis (HWC: just C), broadcasting (C,) makes numpy
        run an inner loop of C elements; mean/std are then repeated over the trailing
        per-sample axes so each inner loop covers at least a few thousand elements.
        """
        cached = self._cache
        if cached is not None and cached[0] == x.shape[1:]:
            return cached[1], cached[2]
        axis = self._axis(x, self.axis)
        if x.shape[axis] != self._channels:
            raise SourceError("Normalize", f"has {x.shape[axis]} channels on per-sample axis "
                              f"{self.axis} (per-sample shape {list(x.shape[1:])}), but mean/std "
                              f"have {self._channels} values", field=self.field)
        shape = [1] * x.ndim
        shape[axis] = self._channels
        channels = (self._channels,)
        if math.prod(x.shape[axis + 1:]) >= 1024:  # e.g. CHW: (C, 1, 1) is fast as it is
            mean, std = (np.broadcast_to(stat, channels).reshape(shape[axis:])
                         for stat in (self._mean, self._std))
        else:
            start = axis
            while start > 1 and math.prod(x.shape[start:]) < 4096:
                start -= 1
            mean, std = (np.ascontiguousarray(np.broadcast_to(
                np.broadcast_to(stat, channels).reshape(shape[start:]), x.shape[start:]))
                for stat in (self._mean, self._std))
        self._cache = (x.shape[1:], mean, std)  # one assignment: safe to share across threads
        return mean, std


class Cast(_FieldProcessor):
    """The field converted to ``dtype`` (no copy when it already has it)."""

    uses_rng = False

    def __init__(self, field: str, dtype: str) -> None:
        super().__init__(field)
        self.dtype = _dtype(dtype)
        if self.dtype.kind not in "biufc":
            raise ValueError(f"dtype must be a bool, integer, float or complex dtype, got {dtype!r}")

    def __call__(self, fields: Fields, rng: np.random.Generator | None = None) -> Fields:
        return self._replace(fields, self._get(fields).astype(self.dtype, copy=False))


class RandomCrop(_FieldProcessor):
    """A ``size`` = ``[height, width]`` window at a random offset, drawn per sample.

    ``layout`` names the per-sample axes: ``HWC`` (default), ``CHW`` or ``HW``. Every
    sample must be at least ``size``; the result is contiguous, of per-sample shape
    ``[h, w, C]``, ``[C, h, w]`` or ``[h, w]``. One gather over a sliding-window view.
    """

    def __init__(self, field: str, size: Any, layout: str = "HWC") -> None:
        super().__init__(field)
        if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
            size = (size, size)
        try:
            h, w = (int(v) for v in size)
        except (TypeError, ValueError):
            raise ValueError(f"size must be [height, width] (or one int), got {size!r}") from None
        if h < 1 or w < 1:
            raise ValueError(f"size must be positive, got {[h, w]}")
        if layout not in _LAYOUTS:
            raise ValueError(f"layout must be one of {', '.join(_LAYOUTS)}, got {layout!r}")
        self.size = (h, w)
        self.layout = layout

    def __call__(self, fields: Fields, rng: np.random.Generator | None = None) -> Fields:
        x = self._get(fields)
        if x.ndim != 1 + len(self.layout):
            raise SourceError("RandomCrop", f"has per-sample shape {list(x.shape[1:])}, which does not "
                              f"fit layout {self.layout} ({len(self.layout)} axes); set layout",
                              field=self.field)
        ay, ax = (a + 1 for a in _LAYOUTS[self.layout])
        (h, w), big_h, big_w = self.size, x.shape[ay], x.shape[ax]
        if big_h < h or big_w < w:
            raise SourceError("RandomCrop", f"per-sample shape {list(x.shape[1:])} ({self.layout}: "
                              f"height {big_h}, width {big_w}) is smaller than the crop size "
                              f"{[h, w]}; resize the samples first or crop smaller", field=self.field)
        if (big_h, big_w) == (h, w):
            return self._replace(fields, x)
        rng = rng if rng is not None else np.random.default_rng()
        n = x.shape[0]
        oy = rng.integers(0, big_h - h + 1, size=n)
        ox = rng.integers(0, big_w - w + 1, size=n)
        windows = sliding_window_view(x, (h, w), axis=(ay, ax))  # (..., H', W', ..., h, w): a view
        if self.layout == "HWC":  # (n, H', W', C, h, w) -> (n, H', W', h, w, C)
            crops = np.moveaxis(windows, 3, -1)[np.arange(n), oy, ox]
        elif self.layout == "CHW":  # (n, C, H', W', h, w); the slice keeps C after n
            crops = windows[np.arange(n), :, oy, ox]
        else:
            crops = windows[np.arange(n), oy, ox]
        return self._replace(fields, np.ascontiguousarray(crops))


class RandomFlip(_FieldProcessor):
    """Reverses per-sample ``axis`` in a random subset of the samples (each with probability ``p``).

    For images: HWC horizontal flip is ``axis: 1``, vertical ``axis: 0``; CHW horizontal is
    ``axis: 2`` (or ``-1``).
    """

    def __init__(self, field: str, axis: int, p: float = 0.5) -> None:
        super().__init__(field)
        if isinstance(axis, bool) or not isinstance(axis, int):
            raise TypeError(f"axis must be an int, got {axis!r}")
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be a probability between 0 and 1, got {p!r}")
        self.axis = axis
        self.p = float(p)

    def __call__(self, fields: Fields, rng: np.random.Generator | None = None) -> Fields:
        x = self._get(fields)
        axis = self._axis(x, self.axis)
        rng = rng if rng is not None else np.random.default_rng()
        flip = rng.random(x.shape[0]) < self.p
        if not flip.any():
            return self._replace(fields, x)
        if flip.all():
            return self._replace(fields, np.flip(x, axis).copy())
        out = x.copy()
        out[flip] = np.flip(x[flip], axis)
        return self._replace(fields, out)


def _dtype(value: Any) -> np.dtype:
    try:
        return np.dtype(value)
    except TypeError as exc:
        raise ValueError(f"dtype {value!r} is not a numpy dtype ({exc}); write e.g. float32") from None


def _stat(name: str, value: Any) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number or a list of numbers, got {value!r}") from None
    if arr.ndim > 1 or arr.size == 0:
        raise ValueError(f"{name} must be a number or a list with one value per channel, got {value!r}")
    return arr.reshape(-1)
