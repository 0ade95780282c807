"""Print one JSON line with the parameter counts of a pretrain config (optionally with GRPO's LoRA).

    python -m flowse.bench.model_info --config conf/paper/pretrain.yaml
    {"total_params": 46179920, "trainable_params": 46179920}
    python -m flowse.bench.model_info --config conf/paper/pretrain.yaml --grpo_config conf/paper/grpo.yaml
    {"total_params": 47752784, "trainable_params": 1572864, "lora_r": 32, "lora_alpha": 64.0}

Extra ``--section.key value`` options override the pretrain yaml. With ``--grpo_config`` the
LoRA of that config (``flowse.rl.lora.apply_lora`` with ``GRPOConfig.lora``) is added first,
so ``trainable_params`` counts the adapter only.
"""
from __future__ import annotations

import argparse
import json

from flowse.models.dit import count_parameters
from flowse.train.pretrain import PretrainConfig, build_model
from flowse.utils.config import load_config


def model_info(config: str | None, grpo_config: str | None = None, overrides: list[str] | None = None) -> dict:
    cfg = load_config(PretrainConfig, config, overrides)
    model = build_model(cfg)
    info: dict = {}
    if grpo_config:
        try:
            from flowse.rl.config import GRPOConfig
            from flowse.rl.lora import apply_lora
        except ImportError as e:
            raise SystemExit(f"model_info: --grpo_config needs flowse.rl.config / flowse.rl.lora ({e})") from None
        gcfg = load_config(GRPOConfig, grpo_config)
        model = apply_lora(model, gcfg.lora)
        info = {"lora_r": gcfg.lora.r, "lora_alpha": gcfg.lora.alpha}
    return {"total_params": count_parameters(model), "trainable_params": count_parameters(model, True), **info}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=None, help="pretrain yaml (default: the paper-size defaults)")
    p.add_argument("--grpo_config", default=None, help="grpo yaml whose LoRA is applied")
    args, overrides = p.parse_known_args(argv)
    print(json.dumps(model_info(args.config, args.grpo_config, overrides)), flush=True)
    return 0


if __name__ == "__main__":
    from flowse.utils.cli import run

    run(main)
