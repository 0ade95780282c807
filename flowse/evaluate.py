"""Stage 6: enhance every test set with every system, score it, write RESULTS per system.

A system is an exp dir:
- ``exp/noisy_input``: the unprocessed noisy input (the baseline row), scored as is;
- a vocoder exp: its ``enhanced_<set>/`` is the vocoder ceiling written by stage 3;
- a model exp (``model.pt``: pretraining or any post-training method): enhanced here with
  ``flowse.enhance.enhance_files``.
Per system and set: ``<sys>/enhanced_<set>/`` (model systems), ``<sys>/scores_<set>/`` (one
file per metric + summary.json, ``flowse.metrics.scoring.score_sets``: all sets of a system
in one set of ``nj`` jobs), then ``<sys>/RESULTS.md``
and ``<sys>/results.json`` (``flowse.metrics.results``). Each (system, set) step has a
completion marker (``flowse.utils.stage``): enhancement keyed on the enhancement settings, the
model and its vocoder and the noisy list; scoring keyed on the score config and
the enhanced and reference lists (and the set's ``text`` of transcripts for WER, when stage 1 wrote
one). So a rerun resumes where it stopped, a retrained model is
enhanced again, and an edited score.yaml rescores.
"""
from __future__ import annotations

import os

from flowse.enhance import EnhanceConfig
from flowse.metrics.config import ScoreConfig
from flowse.utils import stage
from flowse.utils.log import get_logger

logger = get_logger(__name__)

NOISY_INPUT = "noisy_input"
MODEL_FILE = "model.pt"


def is_model_dir(path: str) -> bool:
    return os.path.isfile(os.path.join(path, MODEL_FILE))


def find_systems(named: list[str], exp_root: str | None = None) -> list[str]:
    """The ``named`` systems, in order, then every other dir directly under ``exp_root`` that holds
    a ``model.pt`` (whatever its name: pretraining, GRPO or any other post-training exp), sorted."""
    systems = list(dict.fromkeys(os.path.normpath(s) for s in named))
    if exp_root and os.path.isdir(exp_root):
        for name in sorted(os.listdir(exp_root)):
            path = os.path.normpath(os.path.join(exp_root, name))
            if path not in systems and is_model_dir(path):
                systems.append(path)
    return systems


def enhanced_scp(system: str, data_dir: str, test_set: str) -> str:
    """The list stage 6 scores for ``system`` on ``test_set``."""
    if os.path.basename(os.path.normpath(system)) == NOISY_INPUT:
        return os.path.join(data_dir, test_set, "wav.scp")
    return os.path.join(system, f"enhanced_{test_set}", "wav.scp")


class _Enhancement:
    """Enhances the test sets of one model dir, loading the model once and only when a set needs it."""

    def __init__(self, model_dir: str, cfg: EnhanceConfig, device: str):
        from flowse.models.io import read_vocoder_dir

        self.model_dir, self.cfg, self.device = model_dir, cfg, device
        self.enhancer = None
        vocoder_dir = read_vocoder_dir(model_dir)
        self.vocoder_key = stage.read_key(vocoder_dir, "vocoder") if vocoder_dir else None

    def run(self, noisy_scp: str, out_dir: str, force: bool) -> None:
        from flowse.enhance import Enhancer, enhance_files

        key = stage.step_key(config=self.cfg, files=[os.path.join(self.model_dir, MODEL_FILE), noisy_scp],
                             vocoder=self.vocoder_key)
        if stage.is_done(out_dir, "enhance", key, force):
            return
        stage.clear(out_dir, "enhance")
        if self.enhancer is None:
            self.enhancer = Enhancer.from_model_dir(self.model_dir, self.device, cfg=self.cfg)
        logger.info("enhancing %s with %s", noisy_scp, self.model_dir)
        enhance_files(self.enhancer, [noisy_scp], out_dir)
        stage.mark_done(out_dir, "enhance", key)


def evaluate_system(system: str, data_dir: str, sets: list[str], score_cfg: ScoreConfig,
                    enhance_cfg: EnhanceConfig | None = None, nj: int = 1, cmd: str = "local",
                    device: str = "cpu", force: bool = False) -> list[str]:
    """Enhance (model systems), score and tabulate ``sets`` for one system; returns the sets scored."""
    from flowse.metrics.results import make_results
    from flowse.metrics.scoring import ScoreList, score_sets

    os.makedirs(system, exist_ok=True)
    enhancement = _Enhancement(system, enhance_cfg or EnhanceConfig(), device) if is_model_dir(system) else None
    scored, lists = [], []
    for test_set in sets:
        set_dir = os.path.join(data_dir, test_set)
        noisy, ref = os.path.join(set_dir, "wav.scp"), os.path.join(set_dir, "spk1.scp")
        if not os.path.exists(noisy):
            raise FileNotFoundError(f"test set {test_set}: {noisy} not found (run stages 0-1)")
        est = enhanced_scp(system, data_dir, test_set)
        if enhancement is not None:
            enhancement.run(noisy, os.path.dirname(est), force)
        elif not os.path.exists(est) and not os.path.exists(ref):
            logger.info("%s: no %s output (no clean reference, so no vocoder ceiling); skipped", system, test_set)
            continue
        if not os.path.exists(est):
            raise FileNotFoundError(f"{system}: no enhanced output for {test_set} ({est}); rerun the stage that makes it")
        text = os.path.join(set_dir, "text")
        lists.append(ScoreList(est, os.path.join(system, f"scores_{test_set}"), ref if os.path.exists(ref) else None,
                               text if os.path.exists(text) else None))
        scored.append(test_set)
    logger.info("scoring %s on %s", system, " ".join(scored))
    score_sets(lists, score_cfg, nj=nj, cmd=cmd, device=device, force=force)
    make_results(system, scored)
    logger.info("wrote %s/RESULTS.md and results.json (%d of %d sets scored)", system, len(scored), len(sets))
    return scored


def evaluate(systems: list[str], data_dir: str, sets: list[str], score_cfg: ScoreConfig,
             enhance_cfg: EnhanceConfig | None = None, nj: int = 1, cmd: str = "local", device: str = "cpu",
             force: bool = False) -> None:
    """Stage 6 over ``systems`` (see ``find_systems``) and test ``sets`` (data dirs under ``data_dir``)."""
    for system in systems:
        evaluate_system(system, data_dir, sets, score_cfg, enhance_cfg, nj, cmd, device, force)
