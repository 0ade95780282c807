"""Score enhanced audio: one Kaldi-style file per metric plus summary.json in --out_dir.

    python -m flowse.bin.score --est exp/x/enhanced_test/wav.scp --ref data/test/spk1.scp \\
        --metrics dnsmos,spk,sbs,pesq,estoi,sisdr --out_dir exp/x/scores_test \\
        [--nj 4] [--config conf/mini/score.yaml] [--device cpu|cuda] [--section.key value ...]

--est / --ref: a wav.scp (ark entries or audio paths) or a folder of audio files
(utt id = file name without extension). Keys are matched by utt id; estimates
without a reference are an error naming them. Without --ref only the
non-intrusive DNSMOS metrics are computed. Unusable utterances are skipped with
one log line each and listed in summary.json ("num_skipped", "skipped"); the exit
status stays 0 unless --fail_on_skip true (then 3, after writing all outputs).
A finished dir is skipped on rerun unless --force true.
"""
from __future__ import annotations

import argparse
import os
import sys

from flowse.metrics.config import NEEDS_REF, ScoreConfig, expand_metrics
from flowse.utils.config import load_config, save_config
from flowse.utils.fileio import c_sorted, write_text
from flowse.utils.log import get_logger, setup_logging
from flowse.utils.stage import is_done, mark_done

logger = get_logger("flowse.bin.score")

EXIT_SKIPPED = 3


def _bool(s: str) -> bool:
    if s.lower() in ("true", "1", "yes"):
        return True
    if s.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {s!r}")


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--est", required=True, help="wav.scp or folder of the audio to score")
    p.add_argument("--ref", default=None, help="wav.scp or folder of the clean references (spk1.scp)")
    p.add_argument("--metrics", default=None, help="comma list of dnsmos,spk,sbs,pesq,estoi,sisdr (default: config)")
    p.add_argument("--out_dir", required=True)
    p.add_argument("--config", default=None, help="score.yaml")
    p.add_argument("--nj", type=int, default=1, help="parallel jobs (keys split evenly)")
    p.add_argument("--cmd", default="local", help="job backend: local or 'slurm <srun options>'")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--threads", type=int, default=0, help="threads per job (0: cores / nj)")
    p.add_argument("--keys", default=None, help="score only the utt ids listed in this file (one per line)")
    p.add_argument("--progress", type=_bool, default=True)
    p.add_argument("--force", type=_bool, default=False)
    p.add_argument("--fail_on_skip", type=_bool, default=False, help=f"exit {EXIT_SKIPPED} if any utt was skipped")
    return p


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def main(argv: list[str] | None = None) -> int:
    args, extra = get_parser().parse_known_args(argv)
    setup_logging()
    out_dir = args.out_dir
    if is_done(out_dir, "score") and not args.force:
        logger.info("%s already scored (remove %s/.score.done or pass --force true to redo)", out_dir, out_dir)
        return 0
    cfg = load_config(ScoreConfig, args.config, extra)
    if args.metrics:
        cfg.metrics = [m for m in args.metrics.replace(",", " ").split() if m]
    metrics = expand_metrics(cfg.metrics)
    if args.ref is None and any(m in NEEDS_REF for m in metrics):
        logger.info("no --ref: scoring the non-intrusive metrics only (%s dropped)",
                    " ".join(m for m in metrics if m in NEEDS_REF))
        metrics = [m for m in metrics if m not in NEEDS_REF]
    if not metrics:
        raise SystemExit("score: no metric left to compute")
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise SystemExit(f"score: --device {args.device} but no CUDA device is available")
    os.makedirs(out_dir, exist_ok=True)
    save_config(cfg, os.path.join(out_dir, "config.yaml"))

    from flowse.metrics.scoring import audio_list

    est = audio_list(args.est)
    ref = audio_list(args.ref) if args.ref else None
    keys = c_sorted(est)
    if args.keys:
        wanted = [line.split()[0] for line in open(args.keys, encoding="utf-8") if line.strip()]
        unknown = [k for k in wanted if k not in est]
        if unknown:
            raise SystemExit(f"score: {len(unknown)} keys of {args.keys} are not in {args.est}: {unknown[:5]}")
        keys = c_sorted(wanted)
    if ref is not None:
        missing = [k for k in keys if k not in ref]
        if missing:
            raise SystemExit(
                f"score: {len(missing)} utterances of {args.est} have no reference in {args.ref}: "
                f"{' '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}"
            )
    nj = max(1, min(args.nj, len(keys)))
    threads = args.threads or max(1, _cpu_count() // nj)
    summary = _score_parallel(args, extra, keys, metrics, nj, threads) if nj > 1 else \
        _score_here(args, cfg, est, ref, keys, metrics, threads)
    means = " ".join(f"{m}={v['mean']:.4f}" for m, v in summary["metrics"].items() if v["mean"] is not None)
    logger.info("%s: %d/%d scored: %s", out_dir, summary["num_scored"], summary["num_utts"], means)
    for m, v in summary["metrics"].items():
        if v.get("status") == "n/a":
            logger.info("%s", v["hint"])
    if summary["num_skipped"]:
        logger.warning("%d utterance(s) skipped, listed in %s/summary.json", summary["num_skipped"], out_dir)
    mark_done(out_dir, "score")
    return EXIT_SKIPPED if (args.fail_on_skip and summary["num_skipped"]) else 0


def _score_here(args, cfg: ScoreConfig, est, ref, keys, metrics, threads) -> dict:
    from flowse.metrics.scoring import score_keys, write_outcome
    from flowse.metrics.suite import MetricSuite

    if any(m in metrics for m in ("SIG", "BAK", "OVRL", "P808", "SPK", "SBS")):
        import torch

        torch.set_num_threads(threads)
    if cfg.models.dnsmos.threads == 0:
        cfg.models.dnsmos.threads = threads
    suite = MetricSuite(metrics, cfg.models, args.device)
    out = score_keys(keys, est, ref, suite, cfg.batch_size, cfg.min_seconds, args.progress)
    return write_outcome(args.out_dir, out, args.est, args.ref)


def _score_parallel(args, extra, keys, metrics, nj, threads) -> dict:
    from flowse.metrics.scoring import merge_outcomes, read_outcome, write_outcome
    from flowse.utils.jobs import python_module_argv, run_jobs, split_list

    split_dir = os.path.join(args.out_dir, f"split{nj}")
    for j, part in enumerate(split_list(keys, nj), 1):
        write_text(os.path.join(split_dir, f"keys.{j}"), "".join(k + "\n" for k in part))
    argv = python_module_argv(
        "flowse.bin.score", "--est", args.est, "--out_dir", os.path.join(split_dir, "JOB"),
        "--keys", os.path.join(split_dir, "keys.JOB"), "--metrics", ",".join(metrics), "--nj", "1",
        "--device", args.device, "--threads", str(threads), "--progress", "false", "--force", "true",
        *(["--ref", args.ref] if args.ref else []), *(["--config", args.config] if args.config else []), *extra,
    )
    logger.info("scoring %d utterances in %d jobs (logs: %s/log/score.*.log)", len(keys), nj, args.out_dir)
    import flowse

    root = os.path.dirname(os.path.dirname(os.path.abspath(flowse.__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, *filter(None, [os.environ.get("PYTHONPATH")])]))
    run_jobs(argv, nj, os.path.join(args.out_dir, "log"), "score", args.cmd, env=env)
    parts = [read_outcome(os.path.join(split_dir, str(j))) for j in range(1, nj + 1)]
    return write_outcome(args.out_dir, merge_outcomes(parts, keys), args.est, args.ref)


if __name__ == "__main__":
    sys.exit(main())
