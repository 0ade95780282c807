"""Guarded export of a GRPO run: which evaluated step becomes the exp dir's model, and why.

Every held-out evaluation (``flowse.rl.evaluate``) keeps its per-utterance metric values, and
the task keeps that step's LoRA weights (``lora/step_<n>.pt``). A step qualifies when none of
its guard metrics falls below the base model (step 0) by more than the tolerance: for each
guard, the paired differences ``step - base`` over the utterances (those defined at both) are
resampled ``export.bootstrap`` times (seeded: the same draw for every step and metric), and the
``export.confidence`` lower bound of their mean must be >= -tolerance. Among the qualifying
steps the one with the best mean held-out reward is exported (ties: the earlier step); step 0
always qualifies, so "no step helped safely" exports the base model. The held-out reward uses
the reward function with the base evaluation's stds (the same normalisation for every step).

Outputs in the exp dir: ``model.pt`` + ``model_config.yaml`` + ``vocoder_dir`` (the chosen
step, merged: what stage 6 and ``flowse-enhance`` use), ``last/`` (the last step's merged
model dir) and ``export.json`` (chosen step, each guard's bound per step, the criterion, a
one-paragraph ``summary``).
"""
from __future__ import annotations

import copy
import os

import numpy as np
import torch

from flowse.rl.config import ExportConfig
from flowse.utils.checkpoint import load_checkpoint, save_checkpoint
from flowse.utils.fileio import write_json
from flowse.utils.log import get_logger

logger = get_logger(__name__)

LORA_DIR = "lora"
LAST_DIR = "last"
EXPORT_FILE = "export.json"


def exported_config(model_cfg, cfg):
    """The model config written with a post-trained model: ``flow.cfg_strength`` = ``rollout.cfg_strength``
    when set (inference uses the CFG weight the method sampled and trained with)."""
    from dataclasses import replace

    if cfg.rollout.cfg_strength is None:
        return model_cfg
    return replace(model_cfg, flow=replace(model_cfg.flow, cfg_strength=cfg.rollout.cfg_strength))


def lora_path(exp_dir: str, step: int) -> str:
    return os.path.join(exp_dir, LORA_DIR, f"step_{int(step)}.pt")


def save_step_lora(exp_dir: str, step: int, state: dict) -> None:
    """The LoRA weights of an evaluated step (atomic; rank 0)."""
    os.makedirs(os.path.join(exp_dir, LORA_DIR), exist_ok=True)
    save_checkpoint({k: v.detach().cpu() for k, v in state.items()}, lora_path(exp_dir, step))


def paired_lower_bound(diff: np.ndarray, resamples: int, confidence: float, seed: int) -> float:
    """The ``confidence`` lower bound of ``mean(diff)`` by a bootstrap over the items of ``diff [N]``."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(diff), size=(resamples, len(diff)))
    return float(np.quantile(diff[idx].mean(axis=1), 1.0 - confidence))


def paired_values(row: dict, base: dict, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Values of ``metric`` at ``row`` and at ``base`` on the utterances both hold, both finite."""
    pos = {k: i for i, k in enumerate(base["utt_keys"])}
    pairs = [(v, base["utt_values"][metric][pos[k]]) for k, v in zip(row["utt_keys"], row["utt_values"][metric])
             if k in pos]
    a = np.array([p[0] for p in pairs], dtype=np.float64)
    b = np.array([p[1] for p in pairs], dtype=np.float64)
    ok = np.isfinite(a) & np.isfinite(b)
    return a[ok], b[ok]


def held_out_reward(row: dict, reward_fn, stds: dict[str, float]) -> float:
    """Mean reward over the utterances of an evaluation row (``stds``: the normalisation)."""
    metrics = {k: np.asarray(v, dtype=np.float64) for k, v in row["utt_values"].items()}
    return float(np.mean(reward_fn.reward(metrics, stds)))


def choose_step(evals: list[dict], reward_fn, cfg: ExportConfig) -> dict:
    """The exported step of the evaluation rows ``evals`` (each ``step``, ``utt_keys``, ``utt_values``)
    and why: ``{"step", "guard_metrics", "criterion", "steps": {step: {"reward", "qualifies", "guards":
    {metric: {"mean_diff", "lower_bound", "tolerance", "ok"}}}}, "summary"}``."""
    rows = [r for r in evals if "utt_values" in r]
    base = next((r for r in rows if int(r["step"]) == 0), None)
    if base is None:
        raise ValueError("no held-out evaluation of the base model (step 0) to guard against")
    base_values = {k: np.asarray(v, dtype=np.float64) for k, v in base["utt_values"].items()}
    stds = {m: float(np.std(v)) for m, v in reward_fn.rewarded_values(base_values).items()}
    guards = [m for m in cfg.guard_metrics if m in base["utt_values"]]
    per_step: dict[int, dict] = {}
    for row in sorted(rows, key=lambda r: int(r["step"])):
        g = {}
        for m in guards:
            a, b = paired_values(row, base, m)
            diff = a - b
            lower = paired_lower_bound(diff, cfg.bootstrap, cfg.confidence, cfg.seed) if diff.size else float("nan")
            tol = cfg.tolerance_of(m)
            g[m] = {"mean_diff": float(diff.mean()) if diff.size else float("nan"), "lower_bound": lower,
                    "tolerance": tol, "ok": bool(int(row["step"]) == 0 or lower >= -tol)}
        per_step[int(row["step"])] = {"reward": held_out_reward(row, reward_fn, stds),
                                      "qualifies": all(v["ok"] for v in g.values()), "guards": g}
    best = max((s for s, v in per_step.items() if v["qualifies"]), key=lambda s: (per_step[s]["reward"], -s))
    criterion = (f"the {100 * cfg.confidence:g}% lower bound of the mean paired difference (step - base) over "
                 f"utterances, {cfg.bootstrap} bootstrap resamples (seed {cfg.seed}), >= -tolerance")
    out = {"step": best, "guard_metrics": guards, "criterion": criterion, "utts": len(base["utt_keys"]),
           "steps": {str(s): v for s, v in per_step.items()}}
    out["summary"] = _summary(out, per_step, max(per_step))
    return out


def _summary(out: dict, per_step: dict[int, dict], last: int) -> str:
    best = out["step"]
    rej = []
    for s, v in per_step.items():
        failed = [f"{m} {g['lower_bound']:+.3f} < -{g['tolerance']:g}" for m, g in v["guards"].items() if not g["ok"]]
        if failed:
            rej.append(f"step {s} ({', '.join(failed)})")
    what = "the base model (no evaluated step improved the held-out reward with its guards held)" if best == 0 \
        else f"step {best}"
    text = (f"Exported {what}: held-out reward {per_step[best]['reward']:.4f} (base {per_step[0]['reward']:.4f}, "
            f"last step {last}: {per_step[last]['reward']:.4f}), the best among the evaluated steps whose guard "
            f"metrics ({', '.join(out['guard_metrics']) or 'none'}) did not fall below the base model by more than "
            f"their tolerance: {out['criterion']}, over {out['utts']} held-out utterances.")
    if rej:
        text += " Rejected by a guard: " + "; ".join(rej) + "."
    if best != last:
        text += f" The last step's model is in {LAST_DIR}/."
    return text


def export_models(model: torch.nn.Module, model_cfg, exp_dir: str, vocoder_dir: str, last_step: int,
                  choice: dict | None) -> int:
    """Write the chosen step's merged model into ``exp_dir``, the last step's into ``exp_dir/last`` and
    ``export.json``; ``model`` holds the LoRA of the last step (it is merged in place). Returns the step."""
    from flowse.models.io import save_model_dir
    from flowse.rl.lora import load_lora_state_dict, merge_lora

    step = last_step if choice is None else int(choice["step"])
    last = copy.deepcopy(model)
    merge_lora(last)
    save_model_dir(last, model_cfg, os.path.join(exp_dir, LAST_DIR), vocoder_dir, step=last_step,
                   config_name="model_config.yaml")
    if step != last_step:
        load_lora_state_dict(model, load_checkpoint(lora_path(exp_dir, step)))
    merge_lora(model)
    save_model_dir(model, model_cfg, exp_dir, vocoder_dir, step=step, config_name="model_config.yaml")
    if choice is None:
        choice = {"step": last_step, "summary": f"Exported the last step ({last_step}): no held-out evaluation "
                                                f"to guard with."}
    write_json(os.path.join(exp_dir, EXPORT_FILE), {"last_step": last_step, **choice})
    logger.info("exported step %d of %d into %s: %s", step, last_step, exp_dir, choice["summary"])
    return step
