"""GRPO post-training config (stage 5): the yaml schema, loaded with ``flowse.utils.config.load_config``.

Paper numbers (Sec. 3.2, 4) are the defaults; ``conf/paper/grpo.yaml`` repeats them with
the section named. Counting conventions:

- an iteration collects ``rounds_per_iter`` rollout rounds of ``prompts_per_round`` noisy
  prompts, each prompt with ``group_size`` candidates (paper: 12 rounds x 6 prompts = 72
  prompts, G = 10: 720 candidates). One round is one batched sampler call (all its
  prompts' candidates together) with its own draw of the number of steps and the window
  start (Flow-GRPO-Fast draws them per sampling batch);
- training runs on the SDE transitions (candidate, window step) of the kept groups, in
  micro-batches of ``train_batch_size`` transitions (one forward/backward each), split
  into exactly ``updates_per_iter`` optimizer steps (paper: 4). ``train.max_steps`` counts
  optimizer steps (paper: 5k), which is also what the LR schedule counts.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from flowse.metrics.registry import check_outputs
from flowse.rl.reward import RewardConfig
from flowse.train.config import TrainConfig
from flowse.utils.config import check


@dataclass
class LoRAConfig:
    """LoRA on ``blocks.<i>.attn.{to_q,to_k,to_v,to_out}`` (paper: r 32, alpha 64 -> 1.57M params).

    ``dropout`` must stay 0 for exact on-policy log-probs (ratio 1 before the first update).
    """

    r: int = 32
    alpha: float = 64.0
    dropout: float = 0.0
    targets: list[str] = field(default_factory=lambda: ["to_q", "to_k", "to_v", "to_out"])

    def __post_init__(self):
        check(self.r >= 1, f"lora.r must be >= 1, got {self.r}")
        check(self.alpha > 0, f"lora.alpha must be positive, got {self.alpha}")
        check(0.0 <= self.dropout < 1.0, f"lora.dropout must be in [0, 1), got {self.dropout}")
        allowed = {"to_q", "to_k", "to_v", "to_out"}
        check(bool(self.targets) and set(self.targets) <= allowed,
              f"lora.targets must be a non-empty subset of {sorted(allowed)}, got {self.targets}")


@dataclass
class RolloutConfig:
    """Mixed ODE-SDE sampler of the rollouts (paper Sec. 2.2.2, 3.2).

    ``noise_level`` is a in ``s = a sqrt((1-t)/t)``. Per round, nfe is drawn uniformly from
    ``nfe_range`` and the window start S_min (1-based step index) from ``window_start_range``
    (both inclusive); the SDE window is steps S_min .. S_min + window_size - 1, clipped to
    nfe - 1: the last step stays an ODE step and is not trained (as in Flow-GRPO: its std is
    tiny and its noise is never denoised). Non-fast ablation: window_start_range [1, 1],
    window_size 10 (every step but the last).
    ``cfg_strength``: CFG weight w of rollouts AND training log-probs (null: the model's
    ``flow.cfg_strength``). ``crop_seconds``: prompts longer than this are randomly cropped
    (wav and mel aligned at hop boundaries); shorter ones are padded, so every candidate of
    an iteration has the same padded length. ``precision``: the network's autocast dtype;
    the SDE step and log-probs are always fp32.
    ``same_init_noise``: the G candidates of a prompt start from the same x0 (Flow-GRPO's
    ``sample.same_latent``), so their rewards differ only through the SDE noise of the
    window, the part the policy gradient credits (lower-variance advantages; the paper
    does not say, Flow-GRPO's default is false).
    """

    noise_level: float = 0.4
    nfe_range: list[int] = field(default_factory=lambda: [7, 10])
    window_start_range: list[int] = field(default_factory=lambda: [1, 3])
    window_size: int = 2
    cfg_strength: float | None = None
    group_size: int = 10
    prompts_per_round: int = 6
    rounds_per_iter: int = 12
    crop_seconds: float = 4.0
    min_seconds: float = 1.0
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    same_init_noise: bool = False

    def __post_init__(self):
        check(self.noise_level > 0, f"rollout.noise_level must be > 0, got {self.noise_level}")
        check(len(self.nfe_range) == 2 and 1 <= self.nfe_range[0] <= self.nfe_range[1],
              f"rollout.nfe_range must be [lo, hi] with 1 <= lo <= hi, got {self.nfe_range}")
        check(len(self.window_start_range) == 2 and 1 <= self.window_start_range[0] <= self.window_start_range[1],
              f"rollout.window_start_range must be [lo, hi] with 1 <= lo <= hi, got {self.window_start_range}")
        check(self.window_start_range[1] < self.nfe_range[0],
              f"rollout.window_start_range {self.window_start_range} must start before the last step of the "
              f"smallest nfe {self.nfe_range[0]} (the last step is never an SDE step)")
        check(self.window_size >= 1, f"rollout.window_size must be >= 1, got {self.window_size}")
        check(self.group_size >= 2, f"rollout.group_size must be >= 2 (advantages are relative), got {self.group_size}")
        check(self.prompts_per_round >= 1 and self.rounds_per_iter >= 1, "rollout: prompts_per_round and rounds_per_iter must be >= 1")
        check(self.crop_seconds > 0 and 0 <= self.min_seconds <= self.crop_seconds,
              "rollout: need crop_seconds > 0 and 0 <= min_seconds <= crop_seconds")


@dataclass
class SampleConfig:
    """The plain ODE collection of DiffusionNFT and of DPO's pair generation (``flowse.rl.collect.ODECollector``):
    per round ``prompts_per_round`` prompts, each with ``group_size`` candidates from independent initial
    noise (``same_init_noise`` false: an ODE is deterministic, so a shared x0 would give G equal samples),
    integrated with ``nfe`` Euler steps; ``cfg_strength``, ``crop_seconds``, ``min_seconds``, ``precision``
    as in ``RolloutConfig``."""

    nfe: int = 10
    group_size: int = 8
    prompts_per_round: int = 6
    rounds_per_iter: int = 4
    cfg_strength: float | None = None
    crop_seconds: float = 4.0
    min_seconds: float = 1.0
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    same_init_noise: bool = False

    def __post_init__(self):
        check(self.nfe >= 1, f"rollout.nfe must be >= 1, got {self.nfe}")
        check(self.group_size >= 2, f"rollout.group_size must be >= 2 (advantages are relative), got {self.group_size}")
        check(self.prompts_per_round >= 1 and self.rounds_per_iter >= 1, "rollout: prompts_per_round and rounds_per_iter must be >= 1")
        check(self.crop_seconds > 0 and 0 <= self.min_seconds <= self.crop_seconds,
              "rollout: need crop_seconds > 0 and 0 <= min_seconds <= crop_seconds")
        check(not self.same_init_noise, "rollout.same_init_noise must be false for ODE sampling (the G candidates "
                                        "of a prompt would be identical)")


@dataclass
class GRPOTrainConfig(TrainConfig):
    """The shared training settings (GRPO defaults: paper Sec. 3.2, Flow-GRPO where it is silent) and the
    policy update (Eq. 9). ``train_batch_size``: transitions per forward/backward; ``updates_per_iter``:
    optimizer steps per iteration; ``clip_range``: PPO ratio clip; ``adv_clip`` / ``adv_eps``: advantage
    clamp and std floor; ``beta``: KL weight on the exact per-step KL ``||mu - mu_ref||^2 / (2 s^2 dt)``;
    Flow-GRPO's 0.04 acts on a KL without the 1/dt, so its strength at 10 steps corresponds to
    beta = 0.004 here (the paper gives no value). ``eval_interval`` 0: held-out evaluation only at
    step 0 and at the end."""

    max_steps: int = 5000
    lr: float = 2e-4
    weight_decay: float = 1e-4
    log_interval: int = 1
    eval_interval: int = 250
    ckpt_interval: int = 100
    seed: int = 0
    train_batch_size: int = 12
    updates_per_iter: int = 4
    clip_range: float = 1e-4
    adv_clip: float = 5.0
    adv_eps: float = 1e-4
    beta: float = 0.004

    def __post_init__(self):
        super().__post_init__()
        check(self.train_batch_size >= 1 and self.updates_per_iter >= 1, "train: train_batch_size and updates_per_iter must be >= 1")
        check(self.clip_range > 0 and self.adv_clip > 0 and self.adv_eps >= 0, "train: clip_range, adv_clip > 0, adv_eps >= 0")
        check(self.beta >= 0, f"train.beta must be >= 0, got {self.beta}")


@dataclass
class EvalConfig:
    """Held-out evaluation with the inference sampler (ODE, ``nfe`` steps, noise-free), every metric,
    every ``train.eval_interval`` steps. ``max_utts`` of the valid set (0: all); ``max_seconds`` crops
    long utterances (0: whole); ``seed`` fixes the initial noise so evaluations differ only by the model.
    ``metrics``: judge metrics computed here in addition to the reward's (held out: too dear for every
    rollout candidate, and not rewarded); one that is unavailable here is left out with an info line.
    """

    nfe: int = 10
    max_utts: int = 0
    max_seconds: float = 0.0
    batch_size: int = 8
    seed: int = 1234
    metrics: list[str] = field(default_factory=lambda: ["DMOS"])

    def __post_init__(self):
        check(self.nfe >= 1 and self.batch_size >= 1 and self.max_utts >= 0,
              "eval: nfe >= 1, batch_size >= 1, max_utts >= 0")
        check_outputs(self.metrics, "eval.metrics")


@dataclass
class ExportConfig:
    """Which evaluated step becomes the exp dir's model (``flowse.rl.export``): the best by the reward among
    the steps whose ``guard_metrics`` (those of them computed in the held-out evaluation) do not fall below
    the base model (step 0) by more than ``tolerance`` (one number, or one per guard metric, in the
    metric's units): the ``confidence`` lower bound of the mean paired difference over utterances
    (``bootstrap`` resamples, seeded with ``seed``) must be >= -tolerance. No qualifying step: step 0.
    """

    guard_metrics: list[str] = field(default_factory=lambda: ["DMOS", "SIG", "PESQ", "SPK"])
    tolerance: dict[str, float] | float = field(
        default_factory=lambda: {"DMOS": 0.05, "SIG": 0.05, "PESQ": 0.05, "SPK": 0.01})
    bootstrap: int = 1000
    confidence: float = 0.95
    seed: int = 0

    def __post_init__(self):
        check_outputs(self.guard_metrics, "export.guard_metrics")
        if isinstance(self.tolerance, dict):
            missing = [m for m in self.guard_metrics if m not in self.tolerance]
            check(not missing, f"export.tolerance has no value for guard metric(s) {missing}; give one number "
                               f"or one per guard metric")
        tol = self.tolerance.values() if isinstance(self.tolerance, dict) else [self.tolerance]
        check(all(t >= 0 for t in tol), f"export.tolerance must be >= 0, got {self.tolerance}")
        check(self.bootstrap >= 1, f"export.bootstrap must be >= 1, got {self.bootstrap}")
        check(0.5 <= self.confidence < 1, f"export.confidence must be in [0.5, 1), got {self.confidence}")

    def tolerance_of(self, metric: str) -> float:
        return float(self.tolerance[metric] if isinstance(self.tolerance, dict) else self.tolerance)


@dataclass
class PostTrainConfig:
    """The sections every post-training method's yaml has; a method's config subclasses it and narrows
    ``method`` (its registry name), ``rollout`` and ``train`` to its own types (field order kept).

    ``threads``: torch intra-op threads per process (0 = all cores shared by the local ranks).
    """

    method: str = ""
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    rollout: SampleConfig = field(default_factory=SampleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    threads: int = 0

    def __post_init__(self):
        check(self.threads >= 0, f"threads must be >= 0 (0 = all cores), got {self.threads}")


@dataclass
class GRPOConfig(PostTrainConfig):
    """Everything stage 5 reads for GRPO (see the module doc for counting conventions); ``train`` holds the
    shared training settings (steps, LR, checkpoints, logs, seed) and the policy update."""

    method: Literal["grpo"] = "grpo"
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    train: GRPOTrainConfig = field(default_factory=GRPOTrainConfig)
