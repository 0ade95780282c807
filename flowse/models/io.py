"""The model dir: everything enhancement needs, in one directory.

Layout:
- ``model.pt``: ``{"model": FlowSE state_dict, "step": int}`` (atomic, loads with weights_only);
- ``config.yaml``: the resolved config of the stage that trained it; its ``model`` and ``flow``
  sections (``FlowSEConfig``) rebuild the network, other sections are ignored here; a
  ``model_config.yaml`` takes precedence when present (for exp dirs whose ``config.yaml`` is
  another stage's config, e.g. a GRPO exp exporting a merged model);
- ``vocoder_dir``: one line, the vocoder exp dir relative to the model dir (absolute paths
  are kept absolute when no relative path exists, e.g. across drives).
"""
from __future__ import annotations

import os

import torch

from flowse.models.flowse_model import FlowSE, FlowSEConfig
from flowse.utils.checkpoint import load_checkpoint, save_checkpoint
from flowse.utils.config import load_known_sections, save_config
from flowse.utils.fileio import write_text

MODEL_FILE = "model.pt"
CONFIG_FILES = ("model_config.yaml", "config.yaml")
VOCODER_FILE = "vocoder_dir"


def save_model_dir(model, cfg, out_dir: str, vocoder_dir: str | None, step: int = 0,
                   config_name: str = "config.yaml") -> None:
    """Write ``model.pt``, the config (``config_name``) and ``vocoder_dir`` into ``out_dir``.

    ``model``: a FlowSE (its state_dict is saved as is, buffers included); ``cfg``: a config
    with ``model`` and ``flow`` sections that builds it (``FlowSEConfig`` or a stage config); ``vocoder_dir``: path of the vocoder exp dir (absolute
    or relative to the current directory), stored relative to ``out_dir``.
    """
    if config_name not in CONFIG_FILES:
        raise ValueError(f"config_name must be one of {CONFIG_FILES}")
    os.makedirs(out_dir, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    save_checkpoint({"model": state, "step": int(step)}, os.path.join(out_dir, MODEL_FILE))
    save_config(cfg, os.path.join(out_dir, config_name))
    if vocoder_dir:
        try:
            rel = os.path.relpath(os.path.abspath(vocoder_dir), os.path.abspath(out_dir))
        except ValueError:
            rel = os.path.abspath(vocoder_dir)
        write_text(os.path.join(out_dir, VOCODER_FILE), rel + "\n")


def model_config_path(model_dir: str) -> str:
    for name in CONFIG_FILES:
        p = os.path.join(model_dir, name)
        if os.path.exists(p):
            return p
    raise FileNotFoundError(f"{model_dir}: no {' or '.join(CONFIG_FILES)} (not a model dir?)")


def read_vocoder_dir(model_dir: str) -> str | None:
    """The vocoder exp dir recorded in ``<model_dir>/vocoder_dir`` (resolved), or None."""
    p = os.path.join(model_dir, VOCODER_FILE)
    if not os.path.exists(p):
        return None
    with open(p, encoding="utf-8") as f:
        value = f.read().strip()
    if not value:
        return None
    return os.path.normpath(value if os.path.isabs(value) else os.path.join(model_dir, value))


def read_model_config(path: str) -> FlowSEConfig:
    """The ``model`` and ``flow`` sections of a stage config yaml as a ``FlowSEConfig``."""
    return load_known_sections(FlowSEConfig, path)


def load_model_dir(model_dir: str, device: str | torch.device = "cpu"):
    """``(FlowSE in eval mode on device, FlowSEConfig)`` from a model dir."""
    weights = os.path.join(model_dir, MODEL_FILE)
    if not os.path.exists(weights):
        raise FileNotFoundError(f"{weights} not found (not a model dir, or training has not finished)")
    cfg = read_model_config(model_config_path(model_dir))
    model = FlowSE(cfg.model, cfg.flow)
    state = load_checkpoint(weights)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        raise RuntimeError(f"{weights} does not match the network of {model_config_path(model_dir)}: {e}") from None
    return model.to(device).eval(), cfg
