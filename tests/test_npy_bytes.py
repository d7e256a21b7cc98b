"""``.npy`` bytes read without ``ast`` (CPython 3.11's AST state is not thread-safe)."""

from __future__ import annotations

import ast
import io
import threading

import numpy as np
import pytest

from inputkit.sources.npy_bytes import load_npy_bytes

pytestmark = pytest.mark.timeout(60)


def _npy(array: np.ndarray, version: tuple[int, int] | None = None) -> bytes:
    out = io.BytesIO()
    if version is None:
        np.save(out, array, allow_pickle=False)
    else:
        np.lib.format.write_array(out, array, version=version, allow_pickle=False)
    return out.getvalue()


ARRAYS = [
    np.arange(3, dtype="<f4"),
    np.float64(2.5).reshape(()),
    np.arange(24, dtype=">i8").reshape(2, 3, 4),
    np.asfortranarray(np.arange(12, dtype=np.int16).reshape(3, 4)),
    np.zeros((0, 5), dtype=np.uint8),
    np.array([True, False]),
    np.array(["ab", "cde"]),
    np.arange(6, dtype=np.complex64).reshape(2, 3),
]


@pytest.mark.parametrize("array", ARRAYS, ids=lambda a: f"{a.dtype.str}{a.shape}")
@pytest.mark.parametrize("version", [None, (1, 0), (2, 0), (3, 0)])
def test_numpy_written_headers_parse_without_ast(array, version, monkeypatch):
    data = _npy(array, version)

    def no_ast(*args, **kwargs):
        raise AssertionError("ast used for a header numpy writes")

    monkeypatch.setattr(ast, "literal_eval", no_ast)
    got = load_npy_bytes(data)
    assert got.dtype == array.dtype
    assert got.shape == array.shape
    assert np.array_equal(got, array)
    assert got.flags.writeable
    assert got.flags.f_contiguous == array.flags.f_contiguous


def test_a_structured_dtype_goes_through_numpy_and_matches_it():
    array = np.zeros(3, dtype=[("a", "<i4"), ("b", "<f8", (2,))])
    array["a"] = [1, 2, 3]
    got = load_npy_bytes(_npy(array))
    assert got.dtype == array.dtype
    assert np.array_equal(got, array)


def test_bad_input_is_refused_with_what_is_wrong():
    with pytest.raises(ValueError, match="not a .npy file"):
        load_npy_bytes(b"PK\x03\x04 not numpy at all")
    data = _npy(np.arange(10, dtype=np.int64))
    with pytest.raises(ValueError, match="needs 80 bytes of data; the file holds 72"):
        load_npy_bytes(data[:-8])
    with pytest.raises(ValueError, match="cut short in its header"):
        load_npy_bytes(data[:20])
    objects = _npy(np.array([1], dtype=np.int64)).replace(b"'<i8'", b"'|O8'")
    with pytest.raises(ValueError, match="Python objects"):
        load_npy_bytes(objects)


def test_many_threads_at_once_read_every_array_exactly():
    arrays = [np.arange(i, i + 50, dtype=np.float32).reshape(5, 10) for i in range(64)]
    blobs = [_npy(a) for a in arrays]
    errors: list[BaseException] = []

    def read_all() -> None:
        try:
            for _ in range(20):
                for array, blob in zip(arrays, blobs, strict=True):
                    assert np.array_equal(load_npy_bytes(blob), array)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=read_all) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
