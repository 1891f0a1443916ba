"""Explicit policy registry: every policy is registered once, by name, with its config class.

    @register("sasrec", config=SASRecConfig, kinds=("retriever", "scorer"))
    class SASRecPolicy(FullScorePolicy): ...

``create(name, **overrides)`` validates the config (pydantic, ``extra="forbid"``) so a typo is
an error naming the field; ``get(name)`` returns the entry; ``names()`` lists them all.

Plug-ins are listed in ONE place, the package's entry points (pyproject.toml, group
``hllm_sim.policies``: name = module that registers it), so this module names no plug-in and a
third-party package can add policies the same way. ``get(name)`` imports only that name's module
(hllm pulls in transformers: seconds); ``names()`` imports them all.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from simulator.core.errors import ConfigError

ENTRY_POINT_GROUP = "hllm_sim.policies"


def plugins() -> dict[str, str]:
    """Policy name -> module that registers it, from the installed packages' entry points."""
    from importlib.metadata import entry_points

    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


@dataclass(frozen=True)
class Entry:
    name: str
    cls: type
    config_cls: type[BaseModel]
    kinds: tuple[str, ...]  # subset of ("retriever", "scorer")
    description: str = ""


_REGISTRY: dict[str, Entry] = {}
_loaded = False


def register(name: str, *, config: type[BaseModel], kinds: tuple[str, ...] = ("retriever", "scorer"),
             description: str = "") -> Callable[[type], type]:
    """Class decorator registering a policy under ``name`` (once; a second is an error)."""
    bad = set(kinds) - {"retriever", "scorer"}
    if bad:
        raise ValueError(f"unknown policy kinds {sorted(bad)}")

    def deco(cls: type) -> type:
        if name in _REGISTRY and _REGISTRY[name].cls is not cls:
            raise ValueError(f"policy {name!r} is already registered by {_REGISTRY[name].cls}")
        cls.name = name
        cls.config_cls = config
        _REGISTRY[name] = Entry(name, cls, config, tuple(kinds), description or (cls.__doc__ or "").strip().split("\n")[0])
        return cls

    return deco


def _import(module: str) -> None:
    importlib.import_module(module)  # the module registers its policies


def load_all() -> None:
    """Import every plug-in module (each registers itself)."""
    global _loaded
    if _loaded:
        return
    found = plugins()
    if not found:
        raise ConfigError(f"no policies are registered (entry points {ENTRY_POINT_GROUP!r}): install the package "
                          "with `python -m pip install -e .`")
    for mod in dict.fromkeys(found.values()):
        _import(mod)
    _loaded = True


def names() -> list[str]:
    load_all()
    return sorted(_REGISTRY)


def get(name: str) -> Entry:
    if name not in _REGISTRY and name in plugins():
        _import(plugins()[name])
    if name not in _REGISTRY:
        load_all()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown policy {name!r}; registered: {', '.join(sorted(_REGISTRY))}") from None


def make_config(name: str, overrides: dict[str, Any] | None = None) -> BaseModel:
    entry = get(name)
    try:
        return entry.config_cls(**(overrides or {}))
    except ValidationError as e:
        errs = "; ".join(f"{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors())
        raise ConfigError(f"policy {name!r} config: {errs}") from None


def create(name: str, overrides: dict[str, Any] | None = None, **kwargs: Any) -> Any:
    """Instantiate policy ``name`` with a validated config (``overrides`` dict or kwargs)."""
    cfg = make_config(name, {**(overrides or {}), **kwargs})
    return get(name).cls(cfg)
