"""Where a Hugging Face dataset's files are, found on disk without the ``datasets`` package.

Three layouts are read: a ``Dataset.save_to_disk`` folder (``state.json`` lists its Arrow
files, in order), a ``DatasetDict.save_to_disk`` folder (``dataset_dict.json`` lists the
splits, one such folder each: ``split=`` picks one), and a folder of ``.parquet`` or
``.arrow`` files as the Hub's cache or ``datasets``' own cache lays them out, where a file's
split is a word of its path (``train-00000-of-00002.parquet``, ``mnist-test.arrow``,
``plain_text/validation/0000.parquet``). The column types (``Image`` among them) come from the
``huggingface`` entry of the files' schema metadata, which ``datasets`` writes into every
Arrow and Parquet file. Used by :mod:`inputkit.sources.hf`.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from typing import Any

# The split names ``datasets`` infers from file names, and their usual aliases.
SPLIT_WORDS = ("train", "training", "validation", "valid", "val", "dev", "test", "testing", "eval")
_SEPARATORS = re.compile(r"[-_./\\\s]+")
_SKIPPED = ("cache-", "tmp")  # datasets' cache of .map() results, files being written


@dataclass(frozen=True)
class Layout:
    """The files of one split, in order, and how they are stored (``arrow`` or ``parquet``)."""

    files: tuple[str, ...]
    format: str
    kind: str  # "save_to_disk", "DatasetDict", or "files" (a cache folder)
    split: str | None


def find_dataset(path: str, split: str | None) -> Layout:
    """The files of the dataset at ``path`` (``split`` of it when it has several); a
    ValueError naming the key (``path`` or ``split``) and what to do otherwise."""
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
        raise ValueError(f"path: expected the folder of a Hugging Face dataset (save_to_disk, or "
                         f"the Hub's cache), got {path!r}")
    if split is not None and (not isinstance(split, str) or not split):
        raise ValueError(f"split: expected a split's name (e.g. train), got {split!r}")
    path = os.fspath(path)
    if not os.path.isdir(path):
        what = "a file, not a folder" if os.path.exists(path) else "no such folder"
        raise ValueError(f"path: '{path}' is {what}; name the folder that save_to_disk wrote, or a "
                         "folder of the dataset's .parquet/.arrow files")
    if os.path.isfile(os.path.join(path, "dataset_dict.json")):
        return _dataset_dict(path, split)
    if os.path.isfile(os.path.join(path, "state.json")):
        return _saved(path, split, "save_to_disk")
    return _cache_folder(path, split)


def _dataset_dict(path: str, split: str | None) -> Layout:
    splits = _json(os.path.join(path, "dataset_dict.json")).get("splits")
    if not isinstance(splits, list) or not all(isinstance(s, str) for s in splits):
        raise ValueError(f"path: '{path}/dataset_dict.json' lists no splits "
                         "('splits': [...]); save the DatasetDict again")
    if split is None:
        raise ValueError(f"split: '{path}' is a DatasetDict with the splits {', '.join(splits)}; "
                         f"choose one with source.split={splits[0]}")
    if split not in splits:
        raise ValueError(f"split: '{path}' has no split '{split}'; its splits are "
                         f"{', '.join(splits)}")
    folder = os.path.join(path, split)
    if not os.path.isfile(os.path.join(folder, "state.json")):
        raise ValueError(f"path: '{folder}' (split '{split}') has no state.json; save the "
                         "DatasetDict again")
    return _saved(folder, None, "DatasetDict", split)


def _saved(folder: str, split: str | None, kind: str, chosen: str | None = None) -> Layout:
    state = _json(os.path.join(folder, "state.json"))
    entries = state.get("_data_files")
    if not isinstance(entries, list) or not entries \
            or not all(isinstance(e, dict) and isinstance(e.get("filename"), str) for e in entries):
        raise ValueError(f"path: '{folder}/state.json' lists no data files ('_data_files'); save "
                         "the dataset again with save_to_disk")
    saved_split = state.get("_split")
    if split is not None and split != saved_split:
        raise ValueError(f"split: '{folder}' holds one dataset (split {saved_split!r}), saved with "
                         "Dataset.save_to_disk, not a DatasetDict; remove source.split")
    files = tuple(os.path.join(folder, e["filename"]) for e in entries)
    for f in files:
        if not os.path.isfile(f):
            raise ValueError(f"path: '{f}', listed in '{folder}/state.json', is missing; the "
                             "dataset was not copied whole")
    return Layout(files, "arrow", kind, chosen if chosen is not None else saved_split)


def _cache_folder(path: str, split: str | None) -> Layout:
    found: list[str] = []
    for root, dirs, names in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [os.path.join(root, n) for n in names
                  if n.endswith((".parquet", ".arrow")) and not n.startswith(_SKIPPED)]
    found.sort()
    if not found:
        raise ValueError(f"path: '{path}' is not a Hugging Face dataset: it has no state.json "
                         "(Dataset.save_to_disk), no dataset_dict.json (DatasetDict.save_to_disk) "
                         "and no .parquet or .arrow files")
    words = {f: set(_SEPARATORS.split(os.path.relpath(f, path).lower())) for f in found}
    if split is not None:
        chosen = [f for f in found if split.lower() in words[f]]
        if not chosen:
            present = _splits(words)
            raise ValueError(f"split: no file under '{path}' belongs to split '{split}' (a word of "
                             "its path); " + (f"its splits are {', '.join(present)}" if present
                                              else "its file names name no split: leave split out"))
    else:
        present = _splits(words)
        if len(present) > 1:
            raise ValueError(f"split: '{path}' holds the splits {', '.join(present)}; choose one "
                             f"with source.split={present[0]}")
        chosen = found
        split = present[0] if present else None
    formats = sorted({os.path.splitext(f)[1][1:] for f in chosen})
    if len(formats) > 1:
        raise ValueError(f"path: '{path}' holds both .arrow and .parquet files for this split; "
                         "point source.path at the folder of one of them")
    return Layout(tuple(chosen), formats[0], "files", split)


def _splits(words: dict[str, set[str]]) -> list[str]:
    found = set().union(*words.values())
    return [s for s in SPLIT_WORDS if s in found]


def _json(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError) as exc:
        raise ValueError(f"path: '{path}' cannot be read as JSON ({type(exc).__name__}: {exc}); "
                         "the dataset folder is damaged: save it again") from None
    if not isinstance(data, dict):
        raise ValueError(f"path: '{path}' is not a JSON object; the dataset folder is damaged")
    return data


def hf_features(schema: Any) -> dict[str, Any]:
    """The ``datasets`` features recorded in an Arrow schema's metadata (``{}`` when none)."""
    meta = schema.metadata or {}
    raw = meta.get(b"huggingface")
    if raw is None:
        return {}
    try:
        info = json.loads(raw)
    except ValueError:
        return {}
    features = info.get("info", {}).get("features") if isinstance(info, dict) else None
    return features if isinstance(features, dict) else {}
