"""Speed of the FlowSE DiT: forward time, inference RTF, achieved GFLOP/s vs a matmul peak, training audio-s/s.

    python -m flowse.bench.model                          # paper config (46.18M) on CPU, fp32
    python -m flowse.bench.model --device cuda --dtype bf16
    python -m flowse.bench.model --config conf/mini/pretrain.yaml --threads 2

Measured in one run: the peak of a square matmul (``--matmul_n``) in the same dtype;
one forward on ``--seconds`` of audio (batch 1); the model-only inference real-time
factor of ``--nfe`` Euler steps without CFG (w = 1, one forward per step) and with CFG
(w != 1, one forward of batch 2 per step); training steps (forward, backward, AdamW)
on ``--train_batch`` utterances of ``--seconds`` each. FLOPs are counted analytically
(matmuls, convolutions and attention; 2 FLOPs per multiply-add). Prints a readable
table and, last, one JSON line with every figure.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import time

# Sleeping (not spinning) idle OpenMP threads, as in the training and enhancement bins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from flowse.models.dit import DiTConfig, count_parameters
from flowse.sampling.ode import ode_sample
from flowse.train.pretrain import PretrainConfig, build_model
from flowse.utils.config import load_config

FRAMES_PER_SECOND = 16000 / 256


def dit_flops(cfg: DiTConfig, frames: int, batch: int = 1) -> float:
    """Forward FLOPs of the DiT on ``batch`` sequences of ``frames`` frames."""
    h, inner, f = cfg.hidden, cfg.heads * cfg.head_dim, cfg.n_mels
    per_frame = 2 * f * h  # input projection (2F -> H) as multiply-adds
    per_frame += 2 * h * (h // cfg.conv_groups) * cfg.conv_kernel  # two grouped convs
    per_frame += cfg.depth * (4 * h * inner + 2 * h * cfg.ffn)  # q, k, v, out + FFN
    per_frame += h * f  # output projection
    per_seq = cfg.depth * 2 * frames * frames * inner  # QK^T and AV
    per_seq += cfg.depth * h * 6 * h + 2 * h * h + cfg.time_freq_dim * h + h * h  # adaLN + time MLP
    return 2.0 * batch * (per_frame * frames + per_seq)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timeit(fn, device: torch.device, repeats: int, warmup: int = 1) -> float:
    """Median seconds of ``fn()`` over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def matmul_peak(n: int, dtype: torch.dtype, device: torch.device, repeats: int) -> float:
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    t = timeit(lambda: a @ b, device, repeats, warmup=2)
    return 2.0 * n**3 / t / 1e9


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=None, help="pretrain yaml (default: the paper config)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"], help="bf16 = autocast (GPU)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: all cores)")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--nfe", type=int, default=10)
    p.add_argument("--cfg", type=float, default=2.0, help="CFG weight of the with-CFG run (any w != 1)")
    p.add_argument("--train_batch", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--matmul_n", type=int, default=2048)
    args, overrides = p.parse_known_args(argv)
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    dev = torch.device(args.device)
    cfg = load_config(PretrainConfig, args.config, overrides)
    torch.manual_seed(0)
    model = build_model(cfg).to(dev)
    for prm in model.parameters():  # adaLN-zero init would make every block an identity: use random weights
        torch.nn.init.normal_(prm, std=0.02)
    amp = torch.bfloat16 if args.dtype == "bf16" else None
    autocast = (lambda: torch.autocast(dev.type, dtype=amp)) if amp else contextlib.nullcontext
    frames = int(round(args.seconds * FRAMES_PER_SECOND))
    nm = cfg.model.n_mels
    res: dict = {"device": str(dev), "dtype": args.dtype, "threads": torch.get_num_threads(),
                 "params": count_parameters(model), "seconds": args.seconds, "frames": frames, "nfe": args.nfe}
    res["matmul_peak_gflops"] = matmul_peak(args.matmul_n, amp or torch.float32, dev, args.repeats)

    model.eval()
    cond = torch.randn(1, frames, nm, device=dev)
    x = torch.randn(1, frames, nm, device=dev)
    t = torch.full((1,), 0.5, device=dev)

    def fwd():
        with torch.no_grad(), autocast():
            model.dit(x, cond, t)

    res["forward_s"] = timeit(fwd, dev, args.repeats)
    res["forward_gflop"] = dit_flops(cfg.model, frames) / 1e9
    res["forward_gflops"] = res["forward_gflop"] / res["forward_s"]
    res["mfu_vs_matmul"] = res["forward_gflops"] / res["matmul_peak_gflops"]
    for name, w in (("nocfg", 1.0), ("cfg", args.cfg)):
        def infer(w=w):
            with autocast():
                ode_sample(model, cond, None, args.nfe, w)

        s = timeit(infer, dev, max(1, args.repeats - 1))
        res[f"infer_{name}_s"] = s
        res[f"rtf_{name}"] = s / args.seconds

    model.train()
    b = args.train_batch
    clean = torch.randn(b, frames, nm, device=dev)
    noisy = torch.randn(b, frames, nm, device=dev)
    mask = torch.ones(b, frames, dtype=torch.bool, device=dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)

    def train_step():
        with autocast():
            loss, _ = model.loss(clean, noisy, mask)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    s = timeit(train_step, dev, args.repeats)
    res["train_step_s"] = s
    res["train_audio_s_per_s"] = b * args.seconds / s
    res["train_gflops"] = 3 * dit_flops(cfg.model, frames, b) / 1e9 / s
    if dev.type == "cuda":
        res["gpu"] = torch.cuda.get_device_name(dev)
        res["max_memory_gib"] = torch.cuda.max_memory_allocated(dev) / 2**30

    print(f"FlowSE DiT {res['params']:,} params on {dev} ({args.dtype}, {res['threads']} threads)")
    print(f"  matmul peak ({args.matmul_n}^2):     {res['matmul_peak_gflops']:.1f} GFLOP/s")
    print(f"  forward, {args.seconds:g} s ({frames} frames): {res['forward_s'] * 1e3:.1f} ms, "
          f"{res['forward_gflop']:.1f} GFLOP -> {res['forward_gflops']:.1f} GFLOP/s "
          f"({100 * res['mfu_vs_matmul']:.0f}% of the matmul peak)")
    print(f"  inference {args.nfe} NFE, no CFG:   {res['infer_nocfg_s']:.2f} s  RTF {res['rtf_nocfg']:.3f}")
    print(f"  inference {args.nfe} NFE, CFG w={args.cfg:g}: {res['infer_cfg_s']:.2f} s  RTF {res['rtf_cfg']:.3f}")
    print(f"  training, batch {b} x {args.seconds:g} s: {s:.2f} s/step, {res['train_audio_s_per_s']:.1f} audio-s/s, "
          f"{res['train_gflops']:.1f} GFLOP/s")
    print(json.dumps(res), flush=True)
    return 0


if __name__ == "__main__":
    from flowse.utils.cli import run

    run(main)
