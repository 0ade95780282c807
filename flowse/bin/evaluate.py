"""Stage 6: enhance every test set with every system, score it, write RESULTS.md per system.

A system is an exp dir:
- ``exp/noisy_input``: the unprocessed noisy input (the baseline row), scored as is;
- a vocoder exp (``vocoder.yaml``): its ``enhanced_<set>/`` is the vocoder ceiling written by stage 3;
- a model exp (``model.pt``): enhanced here with ``flowse.bin.enhance``.
Per system and set: ``<sys>/enhanced_<set>/wav.scp`` (model systems), ``<sys>/scores_<set>/``
(one file per metric + summary.json), then ``<sys>/RESULTS.md`` and ``<sys>/results.json``.
Each (system, set) step has its own completion marker, so a rerun resumes where it stopped.
"""
from __future__ import annotations

import argparse
import os

from flowse.utils import stage
from flowse.utils.log import get_logger, setup_logging

logger = get_logger(__name__)


def _enhanced_scp(system: str, data_dir: str, test_set: str) -> str | None:
    if os.path.basename(os.path.normpath(system)) == "noisy_input":
        return os.path.join(data_dir, test_set, "wav.scp")
    return os.path.join(system, f"enhanced_{test_set}", "wav.scp")


def evaluate_system(system: str, data_dir: str, sets: list[str], score_args: list[str], nj: int, cmd: str,
                    force: bool, device: str, enhance_args: list[str]) -> None:
    from flowse.bin import enhance, make_results, score

    os.makedirs(system, exist_ok=True)
    is_model = os.path.exists(os.path.join(system, "model.pt"))
    scored = []
    for test_set in sets:
        set_dir = os.path.join(data_dir, test_set)
        if not os.path.exists(os.path.join(set_dir, "wav.scp")):
            raise FileNotFoundError(f"test set {test_set}: {set_dir}/wav.scp not found (run stages 0-1)")
        est = _enhanced_scp(system, data_dir, test_set)
        out_enh = os.path.dirname(est)
        if is_model and (force or not stage.is_done(out_enh, "enhance")):
            logger.info("enhancing %s with %s", test_set, system)
            enhance.main(["--model_dir", system, "--in", os.path.join(set_dir, "wav.scp"), "--out_dir", out_enh,
                          "--device", device, *enhance_args])
            stage.mark_done(out_enh, "enhance")
        if not os.path.exists(est) and not is_model and not os.path.exists(os.path.join(set_dir, "spk1.scp")):
            logger.info("%s: no %s output (no clean reference, so no vocoder ceiling); skipped", system, test_set)
            continue
        if not os.path.exists(est):
            raise FileNotFoundError(f"{system}: no enhanced output for {test_set} ({est}); rerun the stage that makes it")
        score_dir = os.path.join(system, f"scores_{test_set}")
        if force or not stage.is_done(score_dir, "score"):
            ref = os.path.join(set_dir, "spk1.scp")
            argv = ["--est", est, "--out_dir", score_dir, "--nj", str(nj), "--cmd", cmd, "--device", device]
            if os.path.exists(ref):
                argv += ["--ref", ref]
            logger.info("scoring %s / %s", system, test_set)
            rc = score.main(argv + score_args)
            if rc not in (0, None):
                logger.warning("%s / %s: some files were skipped while scoring (exit %s)", system, test_set, rc)
            stage.mark_done(score_dir, "score")
        scored.append(test_set)
    make_results.main(["--exp_dir", system, "--sets", " ".join(scored)])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--systems", required=True, help="space-separated exp dirs")
    p.add_argument("--data_dir", default="data")
    p.add_argument("--sets", required=True, help="space-separated test sets (data dirs)")
    p.add_argument("--config", default=None, help="score.yaml passed to flowse.bin.score")
    p.add_argument("--nj", type=int, default=1)
    p.add_argument("--cmd", default="local")
    p.add_argument("--device", default="cpu")
    p.add_argument("--enhance_args", default="", help="extra options for flowse.bin.enhance, e.g. '--nfe 10'")
    p.add_argument("--force", default="false", choices=["true", "false"])
    args, overrides = p.parse_known_args(argv)
    setup_logging()
    score_args = (["--config", args.config] if args.config else []) + overrides
    for system in args.systems.split():
        evaluate_system(system, args.data_dir, args.sets.split(), score_args, args.nj, args.cmd,
                        args.force == "true", args.device, args.enhance_args.split())


if __name__ == "__main__":
    main()
