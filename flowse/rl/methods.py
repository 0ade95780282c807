"""The post-training methods stage 5 can run (``method:`` in the yaml), one registry entry each.

A method is a config dataclass (with ``method: Literal["<name>"]`` and the sections ``lora``,
``rollout``, ``train``, ``reward``, ``eval``, ``export``, ``threads``) and a
``flowse.rl.posttrain.PostTrainTask`` subclass; both are named here as ``"module:attribute"`` and
imported only when chosen. ``flowse.rl.build.run_posttrain`` builds the trainer of any of them,
trains, and writes the guarded export.
"""
from __future__ import annotations

import importlib

from flowse.utils.config import ConfigError, load_config, parse_overrides, read_yaml

METHODS: dict[str, tuple[str, str]] = {
    "grpo": ("flowse.rl.config:GRPOConfig", "flowse.rl.task:GRPOTask"),
    "nft": ("flowse.rl.nft:NFTConfig", "flowse.rl.nft:NFTTask"),
    "dpo": ("flowse.rl.dpo:DPOConfig", "flowse.rl.dpo:DPOTask"),
}


def _resolve(ref: str):
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


def method_name(path: str | None, overrides: list[str] | None = None) -> str:
    """The ``method`` of a post-training yaml (``--method`` in ``overrides`` wins; default ``grpo``)."""
    name = parse_overrides(overrides).get("method") or (read_yaml(path).get("method") if path else None) or "grpo"
    if name not in METHODS:
        raise ConfigError(f"{path}: unknown method {name!r}; choose one of {sorted(METHODS)}")
    return name


def config_class(method: str) -> type:
    return _resolve(METHODS[method][0])


def task_class(method: str) -> type:
    return _resolve(METHODS[method][1])


def load_posttrain_config(path: str | None, overrides: list[str] | None = None):
    """The config object of the method the yaml names."""
    return load_config(config_class(method_name(path, overrides)), path, overrides)
