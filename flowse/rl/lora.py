"""LoRA on the DiT's attention projections (peft), the reference policy, merging.

``apply_lora(model, cfg)`` wraps ``model.dit`` (or ``model`` itself when it has no ``.dit``)
in a ``peft.PeftModel`` whose adapters sit on every ``nn.Linear`` named
``blocks.<i>.attn.<target>`` (targets ``to_q, to_k, to_v, to_out`` by default; a
``to_out`` that is a container is matched through its Linear child). Every other
parameter of ``model`` is frozen. Paper config r = 32, alpha = 64 on the 46.18M DiT:
12 blocks x 4 x 32 x (512 + 512) = 1,572,864 trainable parameters.

The reference policy of the KL term is the same network with the adapter disabled:
``with reference_policy(model): ...``. ``merge_lora`` folds the adapter into the base
weights and restores the plain DiT (original parameter names), so a merged model saves
and loads like a pretrained one.
"""
from __future__ import annotations

import contextlib
import re
from typing import Iterator

import torch
from torch import nn

from flowse.rl.config import LoRAConfig


def _host(model: nn.Module) -> tuple[nn.Module, str | None]:
    """The module that carries the adapter: ``model.dit`` when present, else ``model``."""
    return (model, "dit") if hasattr(model, "dit") else (model, None)


def lora_target_names(dit: nn.Module, targets: list[str] | tuple[str, ...]) -> list[str]:
    """Names of the Linear layers ``blocks.<i>.attn.<target>`` (or ``<target>.<j>``) of a DiT."""
    pat = re.compile(r"(^|\.)blocks\.\d+\.attn\.(%s)(\.\d+)?$" % "|".join(map(re.escape, targets)))
    names = [n for n, m in dit.named_modules() if isinstance(m, nn.Linear) and pat.search(n)]
    if not names:
        raise ValueError(f"no Linear layer matches blocks.<i>.attn.{{{','.join(targets)}}} in {type(dit).__name__}")
    return names


def apply_lora(model: nn.Module, cfg: LoRAConfig) -> nn.Module:
    """Add LoRA adapters (trainable) and freeze everything else; returns ``model`` (changed in place)."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import PeftModel, get_peft_model

    owner, attr = _host(model)
    dit = getattr(owner, attr) if attr else model
    if isinstance(dit, PeftModel):
        raise ValueError("the model already has a LoRA adapter")
    for p in model.parameters():
        p.requires_grad_(False)
    peft_cfg = PeftLoraConfig(
        r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=lora_target_names(dit, cfg.targets),
        bias="none",
    )
    wrapped = get_peft_model(dit, peft_cfg)
    if attr is None:
        return wrapped
    setattr(owner, attr, wrapped)
    return model


def _peft(model: nn.Module):
    from peft import PeftModel

    m = getattr(model, "dit", model)
    if not isinstance(m, PeftModel):
        raise ValueError("the model has no LoRA adapter (call apply_lora first)")
    return m


def has_lora(model: nn.Module) -> bool:
    from peft import PeftModel

    return isinstance(getattr(model, "dit", model), PeftModel)


def lora_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The trainable LoRA parameters, in a fixed (name) order."""
    return [p for n, p in sorted(_peft(model).named_parameters()) if p.requires_grad]


def count_lora_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in lora_parameters(model))


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Adapter weights only (``lora_`` tensors), detached CPU copies."""
    return {n: p.detach().cpu().clone() for n, p in _peft(model).named_parameters() if "lora_" in n}


def load_lora_state_dict(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load adapter weights saved by ``lora_state_dict``; a missing or extra key is an error."""
    params = {n: p for n, p in _peft(model).named_parameters() if "lora_" in n}
    if set(params) != set(state):
        missing = sorted(set(params) - set(state))[:3]
        extra = sorted(set(state) - set(params))[:3]
        raise ValueError(f"LoRA state mismatch: missing {missing}, unexpected {extra}")
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(state[n].to(p))


@contextlib.contextmanager
def reference_policy(model: nn.Module) -> Iterator[None]:
    """Inside this context the model is the frozen pretrained (reference) policy."""
    with _peft(model).disable_adapter():
        yield


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold the adapter into the base weights and unwrap the DiT (in place); returns ``model``."""
    merged = _peft(model).merge_and_unload()
    if hasattr(model, "dit"):
        model.dit = merged
        return model
    return merged
