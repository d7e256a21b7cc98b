"""``device.normalize`` and ``device.channels_last``: checked here, applied by the device stage.

Batches travel as uint8 through every host queue and the host-to-device copy (a
quarter of float32's bytes); the device stage turns the named fields into float32
``(x / scale - mean) / std`` after the copy. The keys are checked when the config
is loaded (:func:`parse_normalize`), and against the fields the source really
produces once they are known (:func:`check_fields`: the memory plan at start, and
the device stage on its first batch). No torch here: the config layer stays light.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from inputkit.errors import ConfigError

DEFAULT_FIELDS = ("image",)
_KEYS = ("mean", "std", "fields", "scale")
_EXAMPLE = "e.g. device.normalize={mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225]}"


@dataclass(frozen=True)
class NormalizeSpec:
    """``(x / scale - mean[c]) / std[c]`` per channel ``c`` (dim 1 of the batch), as float32."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    fields: tuple[str, ...] = DEFAULT_FIELDS
    scale: float = 255.0


def parse_normalize(value: Any, key: str) -> NormalizeSpec | None:
    """``device.normalize`` (a plain mapping or None) -> a NormalizeSpec; ``key`` names it."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ConfigError(key, f"expected a mapping {{mean: [...], std: [...]}} or null, got "
                          f"{value!r}; {_EXAMPLE}")
    unknown = [str(k) for k in value if k not in _KEYS]
    if unknown:
        raise ConfigError(f"{key}.{unknown[0]}", f"unknown key; device.normalize takes "
                          f"{', '.join(_KEYS)}")
    mean = _numbers(value.get("mean"), f"{key}.mean")
    std = _numbers(value.get("std"), f"{key}.std")
    if len(mean) != len(std):
        raise ConfigError(f"{key}.std", f"has {len(std)} values but mean has {len(mean)}; give "
                          "one mean and one std per channel")
    for i, s in enumerate(std):
        if not s > 0:
            raise ConfigError(f"{key}.std", f"every std must be positive, got {s:g} at [{i}]")
    fields = value.get("fields", list(DEFAULT_FIELDS))
    if isinstance(fields, str):
        fields = [fields]
    if not isinstance(fields, (list, tuple)) or not fields \
            or not all(isinstance(f, str) and f for f in fields):
        raise ConfigError(f"{key}.fields", f"expected a non-empty list of field names, got "
                          f"{fields!r}")
    if len(set(fields)) != len(fields):
        raise ConfigError(f"{key}.fields", f"names a field twice: {list(fields)}")
    scale = value.get("scale", 255.0)
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real) \
            or not math.isfinite(scale) or scale <= 0:
        raise ConfigError(f"{key}.scale", f"must be a positive number (255 for uint8 pixels, 1 "
                          f"for floats already in [0, 1]), got {scale!r}")
    return NormalizeSpec(mean=mean, std=std, fields=tuple(fields), scale=float(scale))


def _numbers(value: Any, key: str) -> tuple[float, ...]:
    if value is None:
        raise ConfigError(key, f"missing; give one value per channel, {_EXAMPLE}")
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)) or not value:
        raise ConfigError(key, f"expected a non-empty list of numbers, one per channel, got "
                          f"{value!r}")
    for i, v in enumerate(value):
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
            raise ConfigError(key, f"expected finite numbers, got {v!r} at [{i}]")
    return tuple(float(v) for v in value)


def transformed_fields(normalize: NormalizeSpec | None, channels_last: bool) -> tuple[str, ...]:
    """The fields the device stage converts: normalize's, or ``image`` for channels_last alone."""
    if normalize is not None:
        return normalize.fields
    return DEFAULT_FIELDS if channels_last else ()


def check_fields(normalize: NormalizeSpec | None, channels_last: bool,
                 fields: Mapping[str, tuple[tuple[int, ...], Any]], key_prefix: str = "") -> None:
    """Check the keys against the fields a batch carries (name -> (sample shape, dtype)).

    A batch of a field has shape ``(N, *sample shape)``: its channels are dim 1.
    """
    p = key_prefix
    present = ", ".join(fields) or "none"
    for name in transformed_fields(normalize, channels_last):
        key = f"{p}device.normalize.fields" if normalize is not None else f"{p}device.channels_last"
        if name not in fields:
            raise ConfigError(key, f"no field '{name}' in the batches; the fields there are: "
                              f"{present}")
        shape, dtype = fields[name]
        shape = tuple(int(d) for d in shape)
        batch_shape = "(N" + "".join(f", {d}" for d in shape) + ")"
        if normalize is not None:
            kind = np.dtype(dtype).kind
            if kind not in "uif":
                raise ConfigError(key, f"field '{name}' is {np.dtype(dtype).name}; normalize needs "
                                  "an integer (uint8) or float field")
            channels = shape[0] if shape else None
            if channels != len(normalize.mean):
                found = f"is {channels}" if channels is not None else "does not exist"
                raise ConfigError(f"{p}device.normalize.mean", f"has {len(normalize.mean)} "
                                  f"values, but field '{name}' has batches of shape {batch_shape}: "
                                  f"its channel dimension (dim 1) {found}; give one mean and std "
                                  "per channel (CHW samples)")
        if channels_last and len(shape) != 3:
            raise ConfigError(f"{p}device.channels_last", f"needs a 4-D batch (N, C, H, W), but "
                              f"field '{name}' has batches of shape {batch_shape}")
