"""An index of the image members of uncompressed tar shards: where each sample's bytes are.

Built from the tar headers alone (``tarfile`` seeks past each member's data), so a
shard of thousands of JPEGs is indexed in milliseconds and each sample is then one
positioned read (``os.pread``) of its member. Compressed shards cannot be read
by position: they get an error that says what to do.
"""

from __future__ import annotations

import os
import tarfile

import numpy as np

from inputkit.errors import shown_name
from inputkit.images.transforms import bad_key
from inputkit.sources.shards import _split_name

_COMPRESSED = ((b"\x1f\x8b", "gzip"), (b"BZh", "bzip2"), (b"\xfd7zXZ\x00", "xz"))

Index = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def index_shards(shards: list[str], extensions: tuple[str, ...], label: str | None) -> Index:
    """(shard number, data offset, size, member name, label) per sample, over every shard.

    A sample is the members sharing a key (``<key>.<ext>``): one image (an extension in
    ``extensions``) and, unless ``label`` is None, a ``<key>.<label>`` member holding a
    whole number. Labels are -1 when ``label`` is None.
    """
    shard_of: list[int] = []
    offsets: list[int] = []
    sizes: list[int] = []
    names: list[bytes] = []
    labels: list[int] = []
    images = {e.lstrip(".") for e in extensions}
    for number, path in enumerate(shards):
        _check_uncompressed(path)
        found = _index_one(path, images, label)
        for offset, size, name, value in found:
            shard_of.append(number)
            offsets.append(offset)
            sizes.append(size)
            # The member's bytes as the tar holds them (a name that is not UTF-8 included).
            names.append(name.encode("utf-8", "surrogateescape"))
            labels.append(value)
    if not offsets:
        raise bad_key("urls", f"the {len(shards)} shard(s) hold no images (members named "
                      f"<key>.<ext> with ext one of {', '.join(sorted(images))})")
    return (np.array(shard_of, dtype=np.int32), np.array(offsets, dtype=np.int64),
            np.array(sizes, dtype=np.int64), np.array(names), np.array(labels, dtype=np.int64))


def _check_uncompressed(path: str) -> None:
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
    except OSError as exc:
        raise bad_key("urls", f"cannot open shard '{path}': {type(exc).__name__}: {exc}") from None
    for prefix, kind in _COMPRESSED:
        if magic.startswith(prefix):
            raise bad_key("urls", f"shard '{path}' is {kind}-compressed; image_shards reads "
                          "members by position, which needs an uncompressed tar (JPEGs do not "
                          "compress further: unpack it, or stream it with source=shards)")


def _index_one(path: str, images: set[str], label: str | None) -> list[tuple[int, int, str, int]]:
    samples: dict[str, list] = {}  # key -> [offset, size, name, label or None]
    members = _plain_members(path, label)
    if members is None:  # long names, pax headers or a damaged header: tarfile reads it
        members = _tarfile_members(path, label)
    for name, offset, size, payload in members:
        parsed = _split_name(name)
        if parsed is None:
            continue
        key, _field, ext = parsed
        entry = samples.setdefault(key, [None, None, None, None])
        if ext in images:
            if entry[0] is not None:
                raise bad_key("urls", f"shard '{path}': sample '{shown_name(key)}' has two "
                              f"images, '{shown_name(entry[2])}' and '{shown_name(name)}'")
            entry[0], entry[1], entry[2] = offset, size, name
        elif label is not None and ext == label:
            entry[3] = _label(payload or b"", name, path)
    end = os.path.getsize(path)
    found = []
    for key, (offset, size, name, value) in samples.items():
        if offset is None:
            continue  # a key with no image (metadata only) is not a sample
        if label is not None and value is None:
            key, name = shown_name(key), shown_name(name)
            raise bad_key("urls", f"shard '{path}': sample '{key}' ('{name}') has no '{key}.{label}' "
                          "label member; every sample needs one (or set source.label=null)")
        if offset + size > end:
            raise bad_key("urls", f"shard '{path}' is truncated: member '{shown_name(name)}' "
                          f"needs bytes up to {offset + size:,} but the file ends at {end:,}")
        found.append((offset, size, name, -1 if value is None else value))
    return found


def _check_end(tar: tarfile.TarFile, path: str) -> None:
    """tarfile stops quietly at a cut-off header; a whole tar ends with a zero block."""
    fileobj = tar.fileobj
    assert fileobj is not None
    fileobj.seek(tar.offset)
    block = fileobj.read(tarfile.BLOCKSIZE)
    if len(block) < tarfile.BLOCKSIZE or block.strip(b"\0"):
        raise bad_key("urls", f"shard '{path}' is truncated or corrupt: it ends at byte "
                      f"{tar.offset:,} without the tar end-of-archive marker")


def _label(payload: bytes, name: str, path: str) -> int:
    text = payload.decode("utf-8", errors="replace").strip()
    try:
        return int(text)
    except ValueError:
        raise bad_key("urls", f"shard '{path}', member '{shown_name(name)}': expected a whole number "
                      f"(the class label), got {text[:40]!r}") from None


Member = tuple[str, int, int, bytes | None]  # name, data offset, size, data (label members)


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


def _plain_members(path: str, label: str | None) -> list[Member] | None:
    """Every regular member of a plain ustar/v7 tar (what WebDataset writers make), from its
    512-byte headers read directly: several times faster than tarfile, which builds a
    TarInfo per member. None when the shard needs tarfile (long names, pax or GNU headers,
    a bad checksum), which then reads it, or says what is wrong."""
    found: list[Member] = []
    suffix = "." + label if label is not None else None
    with open(path, "rb", buffering=0) as f:  # a seek and a 512-byte read per member
        pos = 0
        while True:
            f.seek(pos)
            header = f.read(_BLOCK)
            if len(header) < _BLOCK:
                return None  # cut off: tarfile's reading names the problem
            if not header.strip(b"\0"):
                return found  # the end-of-archive block
            stored = header[148:156].split(b"\0", 1)[0].strip()
            try:
                checksum = int(stored or b"x", 8)
                size = int(header[124:136].split(b"\0", 1)[0].strip() or b"0", 8)
            except ValueError:
                return None
            if checksum != sum(header[:148]) + 256 + sum(header[156:]):
                return None
            kind = header[156:157]
            if kind not in (b"0", b"\0", b"5", b"1", b"2", b"3", b"4", b"6", b"7"):
                return None  # pax ("x", "g") or GNU ("L", "K") extension headers
            name = header[:100].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
            if header[257:262] == b"ustar":
                prefix = header[345:500].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
                if prefix:
                    name = f"{prefix}/{name}"
            data = pos + _BLOCK
            if kind in (b"0", b"\0", b"7"):
                payload = None
                if suffix is not None and name.lower().endswith(suffix):
                    payload = f.read(size)
                found.append((name, data, size, payload))
            pos = data + -(-size // _BLOCK) * _BLOCK
