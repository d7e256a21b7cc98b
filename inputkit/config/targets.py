"""Composition where a new ``_target_`` replaces a node instead of merging into it.

Hydra merges every layer of a config (the ``source`` group's file, the primary
config, an experiment, the command line) key by key. For a ``_target_`` node that
is wrong as soon as the target changes: an experiment that says
``source: {_target_: myproj.Src}`` would keep the default synthetic source's
``fields``, ``chunk_size``, ... and hand them to ``myproj.Src``, which does not
take them. So, while composing, a layer whose node names a *different*
``_target_`` than the node below it replaces that node; a layer that names the
same target (or none) is merged as usual. ``source._target_=X`` and
``source={_target_: X, ...}`` on the command line do the same, before the other
overrides apply, so ``+source.arg=1`` works in either order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from hydra._internal.config_loader_impl import ConfigLoaderImpl
from omegaconf import DictConfig, OmegaConf, open_dict

if TYPE_CHECKING:
    from hydra._internal.config_repository import IConfigRepository
    from hydra.core.default_element import ResultDefault

TARGET = "_target_"


def _normal(target: str) -> str:
    """``pkg.mod:Cls``, ``pkg.mod.Cls`` and a source's short name all compare equal."""
    if ":" not in target and "." not in target:
        from inputkit.sources.registry import resolve_short_name

        target = resolve_short_name(target) or target
    return target.replace(":", ".")


def same_target(a: Any, b: Any) -> bool:
    """Whether two ``_target_`` values name the same thing (non-strings: compared as they are)."""
    if isinstance(a, str) and isinstance(b, str):
        return _normal(a) == _normal(b)
    return bool(a == b)


def _raw_target(node: Any) -> Any:
    """The node's ``_target_`` without resolving interpolations, or None."""
    if not isinstance(node, DictConfig) or node._is_missing() or node._is_none() or TARGET not in node:
        return None
    return node._get_node(TARGET)._value()  # type: ignore[union-attr]


def replace_changed_targets(cfg: DictConfig, layer: DictConfig) -> None:
    """Before ``cfg.merge_with(layer)``: drop every node of ``cfg`` whose ``_target_`` ``layer``
    changes, so the merge leaves only what ``layer`` says there."""
    for key in layer:
        new = layer._get_node(key)
        if not isinstance(new, DictConfig) or key not in cfg:
            continue
        old = cfg._get_node(key)
        if not isinstance(old, DictConfig) or old._is_missing() or old._is_none():
            continue
        new_target, old_target = _raw_target(new), _raw_target(old)
        if new_target is not None and old_target is not None and not same_target(new_target, old_target):
            with open_dict(cfg):  # the layer's node as it is: the merge then adds nothing
                cfg[key] = new
        else:
            replace_changed_targets(old, new)


def target_overrides(overrides: Sequence[Any]) -> list[tuple[str, dict[str, Any]]]:
    """(node path, new node) for each parsed override that sets a ``_target_``:
    ``a.b._target_=X`` gives ``{_target_: X}``, ``a.b={_target_: X, ...}`` the whole mapping
    (not sweeps, not deletions)."""
    found = []
    for override in overrides:
        if override.is_delete() or override.is_sweep_override() or override.package is not None:
            continue
        key = override.key_or_group
        value = override.value()
        if key.endswith("." + TARGET) and isinstance(value, str):
            found.append((key[: -len(TARGET) - 1], {TARGET: value}))
        elif isinstance(value, dict) and isinstance(value.get(TARGET), str):
            found.append((key, value))
    return found


def apply_target_overrides(cfg: DictConfig, targets: Sequence[tuple[str, dict[str, Any]]]) -> None:
    """Replace each node whose ``_target_`` an override changes by what the override says,
    so the command line's overrides (all of them, in order) then apply to a clean node."""
    for path, new in targets:
        old = _raw_target(OmegaConf.select(cfg, path, throw_on_missing=False))
        if old is not None and not same_target(old, new[TARGET]):
            parent_path, _, key = path.rpartition(".")
            parent = OmegaConf.select(cfg, parent_path) if parent_path else cfg
            with open_dict(parent):
                parent[key] = new


class TargetReplacingConfigLoader(ConfigLoaderImpl):
    """Hydra's config loader with one change: a new ``_target_`` replaces the node below it."""

    def __init__(self, config_search_path: Any) -> None:
        super().__init__(config_search_path=config_search_path)
        self._targets: list[tuple[str, dict[str, Any]]] = []

    def _load_configuration_impl(self, config_name: str | None, overrides: list[str],
                                 *args: Any, **kwargs: Any) -> DictConfig:
        from hydra.core.override_parser.overrides_parser import OverridesParser

        self._targets = target_overrides(OverridesParser.create().parse_overrides(overrides))
        try:
            return super()._load_configuration_impl(config_name, overrides, *args, **kwargs)
        finally:
            self._targets = []

    def _compose_config_from_defaults_list(self, defaults: list[ResultDefault],
                                           repo: IConfigRepository) -> DictConfig:
        from hydra.errors import ConfigCompositionException
        from omegaconf.errors import OmegaConfBaseException

        cfg = OmegaConf.create()
        for default in defaults:
            # Hydra loads the layer (and strips its defaults list); we merge it, after
            # dropping the nodes whose _target_ it changes.
            layer = super()._compose_config_from_defaults_list([default], repo)
            replace_changed_targets(cfg, layer)
            try:
                cfg.merge_with(layer)
            except OmegaConfBaseException as e:  # Hydra's own message, naming the file
                raise ConfigCompositionException(  # noqa: B904 (Hydra does not chain it either)
                    f"In '{default.config_path}': {type(e).__name__} raised while composing "
                    f"config:\n{e}").with_traceback(e.__traceback__)
        apply_target_overrides(cfg, self._targets)
        return cfg
