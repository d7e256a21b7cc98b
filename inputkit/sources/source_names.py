"""Short source names: the built-in table and the ``inputkit.sources`` entry points.

Its own module so that both readers depend on it and not on each other: the loader
resolves ``source._target_=shards`` here before importing anything, and the registry
(``inputkit sources``) lists the same names and describes each by loading it through the
loader. Nothing here imports a source.
"""

from __future__ import annotations

from importlib.metadata import entry_points

GROUP = "inputkit.sources"
BUILTIN = {
    "synthetic": "inputkit.sources.synthetic.SyntheticSource",
    "arrays": "inputkit.sources.arrays.ArraySource",
    "tokens": "inputkit.sources.tokens.TokenSource",
    "shards": "inputkit.sources.shards.ShardSource",
    "parquet": "inputkit.sources.parquet.ParquetSource",
    "hf": "inputkit.sources.hf.HFSource",
    "mixture": "inputkit.sources.mixture.Mixture",
    "torch_dataset": "inputkit.sources.torch_dataset.TorchDatasetSource",
    "image_folder": "inputkit.sources.images.ImageFolderSource",
    "image_list": "inputkit.sources.images.ImageListSource",
    "image_shards": "inputkit.sources.image_shards.ImageShardSource",
}


def plugin_targets() -> dict[str, tuple[str, str]]:
    """Entry points of the ``inputkit.sources`` group: name -> (target, distribution)."""
    found = {}
    for ep in entry_points(group=GROUP):
        dist = f"{ep.dist.name} {ep.dist.version}" if ep.dist is not None else "unknown"
        found[ep.name] = (ep.value, dist)
    return found


def resolve_short_name(name: str) -> str | None:
    """The ``_target_`` behind a short name (a built-in or a plugin), or None."""
    if name in BUILTIN:
        return BUILTIN[name]
    plugin = plugin_targets().get(name)
    return plugin[0] if plugin is not None else None
