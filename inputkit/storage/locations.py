"""What a path or pattern expands to: braces, local globs, remote globs by listing the store.

Local paths expand exactly as the shard source always did (braces, then globs, sorted, every
miss an error naming the key); remote ones list the store from the prefix before the first
wildcard, so one LIST request covers a glob however many objects it matches. Parsing a URL
(``is_remote``, ``parse``, ``Location``) lives in ``storage/urls.py``, which the store reads too.
"""

from __future__ import annotations

import fnmatch
import glob
import os
import re
from collections.abc import Sequence

from inputkit.storage.errors import StorageError
from inputkit.storage.urls import SCHEMES, has_scheme, parse

_GLOB = re.compile(r"[*?[]")
_RANGE = re.compile(r"^(-?\d+)\.\.(-?\d+)$")


def expand_braces(pattern: str) -> list[str]:
    """Shell-style brace expansion: ``a-{00..02}.tar`` -> a-00.tar, a-01.tar, a-02.tar;
    ``{train,val}.tar`` -> train.tar, val.tar; nested ones as a shell does (``x{a,b{1,2}}``
    -> xa, xb1, xb2). Braces that are neither (``{x}``, ``{}``, unbalanced) stay as they are."""
    start = pattern.find("{")
    while start != -1:
        end, commas = _closing(pattern, start)
        if end is not None:
            break
        start = pattern.find("{", start + 1)
    else:
        return [pattern]
    body = pattern[start + 1:end]
    head, tail = pattern[:start], pattern[end + 1:]
    numbers = _RANGE.match(body)
    if commas:
        cuts = [start, *commas, end]
        options = [option for a, b in zip(cuts[:-1], cuts[1:], strict=True)
                   for option in expand_braces(pattern[a + 1:b])]
    elif numbers:
        first, last = numbers.groups()
        padded = any(len(n.lstrip("-")) > 1 and n.lstrip("-").startswith("0") for n in (first, last))
        width = max(len(first), len(last)) if padded else 0
        step = 1 if int(last) >= int(first) else -1
        options = [str(i).zfill(width) for i in range(int(first), int(last) + step, step)]
    else:  # not an expansion: keep the braces, expand what is inside and what follows
        options = ["{" + inner + "}" for inner in expand_braces(body)]
    return [head + option + rest for option in options for rest in expand_braces(tail)]


def _closing(pattern: str, start: int) -> tuple[int | None, list[int]]:
    """The position of the ``}`` that closes the ``{`` at ``start`` (None: unbalanced) and
    the positions of the commas at its own level."""
    depth, commas = 0, []
    for i in range(start, len(pattern)):
        char = pattern[i]
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return i, commas
        elif char == "," and depth == 1:
            commas.append(i)
    return None, []


def has_glob(path: str) -> bool:
    """True when ``path`` holds a glob wildcard (``*``, ``?``, ``[``)."""
    return _GLOB.search(path) is not None


def expand(urls: str | Sequence[str], key: str) -> list[str]:
    """Every file or object ``urls`` names, in order: braces expanded, globs matched (sorted),
    each entry's matches kept together. Local and remote entries may mix.

    A pattern that matches nothing, a missing local file, a directory or a path named twice is
    an error naming ``key``; a remote glob lists the store once from its literal prefix.
    """
    entries = [urls] if isinstance(urls, str) else urls
    if not isinstance(entries, Sequence) or not entries or \
            not all(isinstance(u, str) and u for u in entries):
        raise ValueError(f"{key}: expected a path, a glob pattern ('data/train-*.tar') or a list "
                         f"of paths, got {urls!r}")
    found: list[str] = []
    for entry in entries:
        if has_scheme(entry):
            found += _expand_remote(entry, key)
        elif entry.startswith("pipe:"):
            raise ValueError(f"{key}: 'pipe:' URLs are not supported ('{entry}'); name the files "
                             "or objects themselves (s3://, gs://, az://, https:// or a local path)")
        else:
            found += _expand_local(entry, key)
    seen: set[str] = set()
    for path in found:
        if path in seen:
            raise ValueError(f"{key}: '{path}' is listed twice; each file is read once per epoch")
        seen.add(path)
    return found


def _expand_local(entry: str, key: str) -> list[str]:
    found: list[str] = []
    missing: list[str] = []
    for path in expand_braces(entry):
        if has_glob(path):
            found += sorted(p for p in glob.glob(path) if not os.path.isdir(p))
        elif os.path.isdir(path):
            raise ValueError(f"{key}: '{path}' is a directory; name its files, e.g. "
                             f"'{os.path.join(path, '*.tar')}'")
        elif os.path.isfile(path):
            found.append(path)
        else:
            missing.append(path)
    if missing:
        if len(missing) == 1 and missing[0] == entry:
            raise ValueError(f"{key}: no such file: '{entry}'{_resolved(entry)}")
        shown = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
        raise ValueError(f"{key}: {len(missing)} file(s) of '{entry}' do not exist: {shown}")
    if not found:
        raise ValueError(f"{key}: no files match '{entry}'{_resolved(entry)}")
    return found


def _expand_remote(entry: str, key: str) -> list[str]:
    """Brace alternatives are taken as written (no request); globs list the store once per
    distinct literal prefix."""
    from inputkit.storage.store import open_store  # the client only when a URL is used

    found: list[str] = []
    listings: dict[str, list[str]] = {}
    for url in expand_braces(entry):
        where = parse(url, key)
        if not has_glob(where.key):
            found.append(url)
            continue
        if SCHEMES[where.scheme] == "http":
            raise StorageError(url, "other", "an http(s) server cannot be listed, so a glob "
                               "cannot be matched; name the files, e.g. with a brace range "
                               "'shard-{000..127}.tar'", key)
        literal = _GLOB.split(where.key, maxsplit=1)[0]
        prefix = where.base + "/" + literal
        if prefix not in listings:
            listings[prefix] = [info.url for info in open_store(url).list(prefix)]
        pattern = where.base + "/" + where.key
        matched = [u for u in listings[prefix] if _match(u, pattern)]
        if not matched:
            raise StorageError(url, "not_found", f"no objects match (listed '{prefix}'); check "
                               "the bucket, the prefix and the pattern", key)
        found += matched
    return found


def _match(url: str, pattern: str) -> bool:
    """Glob match where ``*`` and ``?`` stay inside one path segment and a hidden name
    (``.partial.tar``) matches only a pattern that starts with a dot, as a shell glob (and
    the local expansion) does."""
    if url.count("/") != pattern.count("/"):
        return False
    return all(fnmatch.fnmatchcase(u, p) and (p.startswith(".") or not u.startswith("."))
               for u, p in zip(url.split("/"), pattern.split("/"), strict=True))


def _resolved(path: str) -> str:
    return "" if os.path.isabs(path) else f" (resolved to '{os.path.abspath(path)}')"
