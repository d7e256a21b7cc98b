"""One tar shard's samples, read from its headers: where each image member's bytes are.

Its own module because two callers run it: the indexer in this process
(``tar_index.index_shards``, and ``remote_shards`` on a cached copy) and the indexing child
processes (``tar_index_pool``), which must not import the indexer that starts them. A plain
ustar/v7 shard (what WebDataset writers make) is walked from a memory map with every header
checksum verified in one numpy pass; anything else (long names, pax or GNU headers, a bad
checksum) goes through ``tarfile``, which reads it or says what is wrong.
"""

from __future__ import annotations

import mmap
import os
import tarfile

import numpy as np

from inputkit.errors import shown_name
from inputkit.images.transforms import bad_key

ShardRows = tuple[np.ndarray, np.ndarray, list[bytes], np.ndarray]  # offsets, sizes, names, labels


def _index_arrays(path: str, images: set[str], label: str | None) -> ShardRows:
    """One shard's samples: data offsets, sizes, member names (bytes) and labels (-1 when
    ``label`` is None), in the order their images appear in the shard."""
    members = _plain_members(path, label)
    if members is None:  # long names, pax headers or a damaged header: tarfile reads it
        members = [(name.encode("utf-8", "surrogateescape"), offset, size, payload)
                   for name, offset, size, payload in _tarfile_members(path, label)]
    image_ext = {e.encode() for e in images}
    label_ext = label.lower().encode() if label is not None else None
    samples: dict[bytes, list] = {}  # key -> [offset, size, name, label or None]
    for name, offset, size, payload in members:
        folder, _, base = name.rpartition(b"/")
        if base.startswith(b".") or b"." not in base:
            continue
        stem, _, suffix = base.partition(b".")
        ext = suffix.rpartition(b".")[2].lower()
        key = folder + b"/" + stem if folder else stem
        if ext in image_ext:
            entry = samples.setdefault(key, [None, None, None, None])
            if entry[0] is not None:
                raise bad_key("urls", f"shard '{path}': sample '{shown_name(key)}' has two "
                              f"images, '{shown_name(entry[2])}' and '{shown_name(name)}'")
            entry[0], entry[1], entry[2] = offset, size, name
        elif label_ext is not None and ext == label_ext:
            samples.setdefault(key, [None, None, None, None])[3] = _label(payload or b"", name, path)
    end = os.path.getsize(path)
    rows = []
    for key, entry in samples.items():
        if entry[0] is None:
            continue  # a key with no image (metadata only) is not a sample
        if label is not None and entry[3] is None:
            shown_key, shown = shown_name(key), shown_name(entry[2])
            raise bad_key("urls", f"shard '{path}': sample '{shown_key}' ('{shown}') has no "
                          f"'{shown_key}.{label}' label member; every sample needs one (or set "
                          "source.label=null)")
        rows.append(entry)
    offsets = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    sizes = np.fromiter((r[1] for r in rows), dtype=np.int64, count=len(rows))
    labels = np.fromiter((-1 if r[3] is None else r[3] for r in rows), dtype=np.int64,
                         count=len(rows))
    if len(rows):
        last = int(np.argmax(offsets + sizes))
        if offsets[last] + sizes[last] > end:
            raise bad_key("urls", f"shard '{path}' is truncated: member "
                          f"'{shown_name(rows[last][2])}' needs bytes up to "
                          f"{int(offsets[last] + sizes[last]):,} but the file ends at {end:,}")
    return offsets, sizes, [r[2] for r in rows], labels


def _check_end(tar: tarfile.TarFile, path: str) -> None:
    """tarfile stops quietly at a cut-off header; a whole tar ends with a zero block."""
    fileobj = tar.fileobj
    assert fileobj is not None
    fileobj.seek(tar.offset)
    block = fileobj.read(tarfile.BLOCKSIZE)
    if len(block) < tarfile.BLOCKSIZE or block.strip(b"\0"):
        raise bad_key("urls", f"shard '{path}' is truncated or corrupt: it ends at byte "
                      f"{tar.offset:,} without the tar end-of-archive marker")


def _label(payload: bytes, name: bytes | str, path: str) -> int:
    text = payload.decode("utf-8", errors="replace").strip()
    try:
        return int(text)
    except ValueError:
        raise bad_key("urls", f"shard '{path}', member '{shown_name(name)}': expected a whole number "
                      f"(the class label), got {text[:40]!r}") from None


Member = tuple[str, int, int, bytes | None]  # name, data offset, size, data (label members)
RawMember = tuple[bytes, int, int, bytes | None]  # the same with the name's bytes


def _tarfile_members(path: str, label: str | None) -> list[Member]:
    """Every regular member, through tarfile (any tar format)."""
    found: list[Member] = []
    try:
        # Names decoded as _plain_members decodes them: UTF-8, odd bytes kept as escapes.
        with tarfile.open(path, mode="r:", encoding="utf-8", errors="surrogateescape") as tar:
            for info in tar:
                if not info.isfile():
                    continue
                payload = None
                if label is not None and info.name.lower().endswith("." + label):
                    handle = tar.extractfile(info)
                    payload = handle.read() if handle else b""
                found.append((info.name, info.offset_data, info.size, payload))
            _check_end(tar, path)
    except tarfile.TarError as exc:
        raise bad_key("urls", f"shard '{path}' is not a tar file, or is corrupt or truncated: "
                      f"{type(exc).__name__}: {exc}") from None
    return found


_BLOCK = tarfile.BLOCKSIZE


def _plain_members(path: str, label: str | None) -> list[RawMember] | None:
    """Every regular member of a plain ustar/v7 tar (what WebDataset writers make), from its
    512-byte headers read straight from a memory map (no TarInfo, no read call per member;
    the header checksums are verified afterwards, all at once with numpy). None when the
    shard needs tarfile (long names, pax or GNU headers, a bad checksum, a cut-off header),
    which then reads it, or says what is wrong."""
    suffix = b"." + label.lower().encode() if label is not None else None
    with open(path, "rb") as f:
        end = os.fstat(f.fileno()).st_size
        if end < _BLOCK:
            return None
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        found, headers = _walk_headers(mapped, end, suffix)
        if found is None or not _checksums_match(mapped, headers):
            return None
        return found
    finally:
        mapped.close()


def _walk_headers(mapped: mmap.mmap, end: int, suffix: bytes | None
                  ) -> tuple[list[RawMember] | None, list[int]]:
    found: list[RawMember] = []
    headers: list[int] = []
    plain = frozenset(b"0\x007")
    known = frozenset(b"0\x00512346" + b"7")
    pos = 0
    while True:
        if pos + _BLOCK > end:
            return None, headers  # cut off: tarfile's reading names the problem
        if mapped[pos] == 0 and not mapped[pos:pos + _BLOCK].strip(b"\0"):
            return found, headers  # the end-of-archive block
        kind = mapped[pos + 156]
        if kind not in known:
            return None, headers  # pax ("x", "g") or GNU ("L", "K") extension headers
        try:
            size = int(mapped[pos + 124:pos + 136].split(b"\0", 1)[0].strip() or b"0", 8)
        except ValueError:
            return None, headers
        headers.append(pos)
        data = pos + _BLOCK
        if kind in plain:
            name = mapped[pos:pos + 100].split(b"\0", 1)[0]
            if mapped[pos + 257:pos + 262] == b"ustar" and mapped[pos + 345]:
                name = mapped[pos + 345:pos + 500].split(b"\0", 1)[0] + b"/" + name
            payload = None
            if suffix is not None and name.lower().endswith(suffix):
                payload = mapped[data:data + size]
            found.append((name, data, size, payload))
        pos = data + -(-size // _BLOCK) * _BLOCK


def _checksums_match(mapped: mmap.mmap, headers: list[int]) -> bool:
    """Every header's stored checksum (octal, bytes 148..155) equals the sum of its bytes with
    that field read as spaces: one numpy pass over all headers."""
    if not headers:
        return True
    rows = _header_rows(mapped, headers)
    total = rows.sum(axis=1, dtype=np.int64) - rows[:, 148:156].sum(axis=1, dtype=np.int64) + 256
    field = rows[:, 148:156]
    # The field as tarfile reads it: up to the first NUL, spaces around octal digits.
    before_nul = np.cumsum(field == 0, axis=1) == 0
    digit = (field >= 0x30) & (field <= 0x37) & before_nul
    space = (field == 0x20) & before_nul
    if not np.all(digit | space | ~before_nul) or not np.all(digit.any(axis=1)):
        return False
    columns = np.arange(8)
    first = np.where(digit, columns, 8).min(axis=1)
    last = np.where(digit, columns, -1).max(axis=1)
    if not np.all(digit.sum(axis=1) == last - first + 1):  # a space between digits
        return False
    stored = np.zeros(len(rows), dtype=np.int64)
    for column in range(8):
        stored = np.where(digit[:, column], stored * 8 + (field[:, column].astype(np.int64) - 0x30),
                          stored)
    return bool(np.array_equal(stored, total))


def _header_rows(mapped: mmap.mmap, headers: list[int]) -> np.ndarray:
    """A copy of the header blocks at ``headers`` (n x 512): the map can then be closed."""
    blocks = np.frombuffer(mapped, np.uint8, len(mapped) // _BLOCK * _BLOCK).reshape(-1, _BLOCK)
    rows = blocks[np.asarray(headers, dtype=np.int64) // _BLOCK]
    del blocks
    return rows
