"""Stages 0-2 of the recipe as library calls: skip what is done, redo what changed, log throughput.

Each stage keys its completion marker (``flowse.utils.stage``) on the resolved config it
uses and the input lists it reads, so a rerun skips finished work, an edited yaml or a
redone upstream stage redoes the affected outputs, and ``force`` redoes everything.
Within a stage the split jobs (``flowse.utils.jobdirs``) resume after a kill.
"""
from __future__ import annotations

import json
import os
import shutil
import time

from flowse.data.corpus import CorpusConfig, prepare_corpus
from flowse.data.corpus_mini import SENTENCE_DIR
from flowse.data.corpus_real import RealSpeechConfig, input_files as real_speech_files, prepare_real_speech
from flowse.data.dump import STEP as DUMP_STEP, dump_sets
from flowse.data.simulate import STEP as SIMULATE_STEP, SimulateConfig, has_sources, set_inputs, simulate_sets
from flowse.features.mel import MelConfig
from flowse.utils import stage
from flowse.utils.config import ConfigError, save_config, to_dict
from flowse.utils.fileio import write_text
from flowse.utils.log import get_logger

logger = get_logger(__name__)

TEST_SETS = "test_sets"  # one set name a line: stage 0's official test sets, then stage 1's; run.sh's default
REAL_SPEECH_STEP = "prepare_real_speech"


def read_test_sets(list_dir: str) -> list[str]:
    """The set names of ``<list_dir>/test_sets``; [] when there is none."""
    path = os.path.join(list_dir, TEST_SETS)
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return f.read().split()


def run_prepare_corpus(corpus: str, cfg: CorpusConfig, out_dir: str, data_dir: str, dns_root: str = "",
                       nj: int = 1, cmd: str = "local", force: bool = False) -> None:
    """Stage 0: the lists of ``corpus`` into ``out_dir`` (official test sets into ``data_dir``).

    Keyed on the config sections the corpus uses (``seed``, ``rir``, its own section), the
    DNS root and, for the mini corpus, the packaged sentence lists. The mini corpus's real-speech
    lists (``corpus_real``) are a step of their own, keyed on ``real_speech`` and its files.
    The official test sets made here are listed in ``<out_dir>/test_sets`` (see ``TEST_SETS``).
    """
    step = f"prepare_corpus_{corpus}"
    section = cfg.mini if corpus == "mini" else cfg.dns2020
    sentences = [os.path.join(SENTENCE_DIR, f) for f in sorted(os.listdir(SENTENCE_DIR))] if corpus == "mini" else []
    key = stage.step_key(config={"corpus": corpus, "seed": cfg.seed, "rir": to_dict(cfg.rir), corpus: to_dict(section)},
                         files=sentences, dns_root=os.path.abspath(dns_root) if dns_root else "")
    if stage.is_done(out_dir, step, key, force):
        logger.info(f"{out_dir}: stage 0 ({corpus}) already done, skipping (--force true to redo)")
    else:
        stage.clear(out_dir, step)
        if force:
            shutil.rmtree(os.path.join(out_dir, "jobs"), ignore_errors=True)
        counts = prepare_corpus(corpus, cfg, out_dir, data_dir, dns_root or None, nj, cmd)
        logger.info(f"stage 0 ({corpus}) done: {json.dumps(counts)}")
        official = [k for k in counts if os.path.isfile(os.path.join(data_dir, k, "wav.scp"))]
        write_text(os.path.join(out_dir, TEST_SETS), "".join(f"{name}\n" for name in official))
        save_config(cfg, os.path.join(out_dir, "corpus.yaml"))
        stage.mark_done(out_dir, step, key)
    if corpus == "mini":
        run_prepare_real_speech(cfg.real_speech, out_dir, force)


def run_prepare_real_speech(cfg: RealSpeechConfig, out_dir: str, force: bool = False) -> None:
    """Stage 0, real speech: the ``real_speech_*`` lists of ``corpus_real``, redone when its dir's files change."""
    key = stage.step_key(config=cfg, files=real_speech_files(cfg))
    if stage.is_done(out_dir, REAL_SPEECH_STEP, key, force):
        logger.info(f"{out_dir}: real speech already listed, skipping (--force true to redo)")
        return
    stage.clear(out_dir, REAL_SPEECH_STEP)
    counts = prepare_real_speech(cfg, out_dir)
    if counts:
        logger.info(f"stage 0 (real speech from {cfg.dir}) done: {json.dumps(counts)}")
    stage.mark_done(out_dir, REAL_SPEECH_STEP, key)


def run_simulate(cfg: SimulateConfig, local_dir: str, data_dir: str, nj: int = 1, cmd: str = "local",
                 force: bool = False) -> None:
    """Stage 1: every set of ``cfg`` into ``<data_dir>/<set>/``; a set is keyed on its config and stage-0 lists.

    A set drawing from an extra clean list that stage 0 did not make (no real speech) is skipped.
    Writes ``<data_dir>/test_sets``: stage 0's official test sets, then the test-split sets made.
    """
    if not cfg.sets:
        raise ConfigError("no sets to simulate (the 'sets' mapping is empty)")
    todo, keys, made = [], {}, []
    for name in cfg.sets:
        set_dir = os.path.join(data_dir, name)
        if not has_sources(cfg, name, local_dir):
            logger.info(f"{set_dir}: skipped, stage 0 made no {cfg.sets[name].clean} list")
            continue
        made.append(name)
        config, lists = set_inputs(cfg, name, local_dir)
        keys[name] = stage.step_key(config=config, files=lists)
        if stage.is_done(set_dir, SIMULATE_STEP, keys[name], force):
            logger.info(f"{set_dir}: already simulated, skipping (--force true to redo)")
            continue
        stage.clear(set_dir, SIMULATE_STEP)
        if force and os.path.isdir(set_dir):
            shutil.rmtree(set_dir)
        todo.append(name)
    if todo:
        _simulate(cfg, todo, keys, local_dir, data_dir, nj, cmd)
    official = read_test_sets(local_dir)
    test_sets = official + [n for n in made if cfg.sets[n].split == "test" and n not in official]
    write_text(os.path.join(data_dir, TEST_SETS), "".join(f"{name}\n" for name in test_sets))


def _simulate(cfg: SimulateConfig, todo: list[str], keys: dict, local_dir: str, data_dir: str, nj: int,
              cmd: str) -> None:
    start = time.time()
    counts = simulate_sets(cfg, todo, local_dir, data_dir, nj, cmd)
    for name in todo:
        set_dir = os.path.join(data_dir, name)
        save_config(cfg, os.path.join(set_dir, "simulate.yaml"))
        stage.mark_done(set_dir, SIMULATE_STEP, keys[name])
        c = counts[name]
        logger.info(f"{set_dir}: {c['utterances']} utterances ({c['seconds'] / 3600:.3f} h), {c['skipped']} skipped")
    wall = time.time() - start
    n = sum(c["utterances"] for c in counts.values())
    hours = sum(c["seconds"] for c in counts.values()) / 3600
    skipped = sum(c["skipped"] for c in counts.values())
    logger.info(
        f"stage 1 done: {n} utterances, {hours:.3f} h of audio in {wall:.1f} s with nj={nj}: "
        f"{n / wall:.1f} utt/s, {hours / (wall / 3600):.0f} audio-hours/hour; {skipped} skipped"
    )


def run_dump_mel(cfg: MelConfig, data_dir: str, dump_dir: str, sets: list[str], stats_sets: list[str],
                 nj: int = 1, cmd: str = "local", force: bool = False) -> None:
    """Stage 2: log-mels of ``sets`` into ``<dump_dir>/<set>/`` and the mel config to ``<dump_dir>/mel.yaml``.

    A set is keyed on the mel config, whether it gets stats, and its ``wav.scp`` / ``spk1.scp``.
    """
    if not sets:
        raise ConfigError("--sets is empty")
    missing = [s for s in sets if not os.path.isdir(os.path.join(data_dir, s))]
    if missing:
        raise FileNotFoundError(f"no data dir for set(s) {missing} under {data_dir} (run stages 0-1)")
    mel = to_dict(cfg)
    save_config(cfg, os.path.join(dump_dir, "mel.yaml"))
    todo = []
    for name in sets:
        set_dir, out_dir = os.path.join(data_dir, name), os.path.join(dump_dir, name)
        key = stage.step_key(config=mel, files=[os.path.join(set_dir, f) for f in ("wav.scp", "spk1.scp")],
                             stats=name in stats_sets)
        if stage.is_done(out_dir, DUMP_STEP, key, force):
            logger.info(f"{out_dir}: already dumped, skipping (--force true to redo)")
            continue
        stage.clear(out_dir, DUMP_STEP)
        if force and os.path.isdir(out_dir):
            shutil.rmtree(out_dir)
        todo.append((name, set_dir, out_dir, key))
    if not todo:
        return
    start = time.time()
    counts = dump_sets(mel, [(d, o, name in stats_sets) for name, d, o, _ in todo], nj, cmd,
                       os.path.join(dump_dir, "log"))
    for (name, _, out_dir, key), c in zip(todo, counts):
        stage.mark_done(out_dir, DUMP_STEP, key)
        logger.info(f"{out_dir}: {c['utterances']} utterances, {c['frames']} frames, {c['skipped']} skipped")
    wall = time.time() - start
    n = sum(c["utterances"] for c in counts)
    logger.info(f"stage 2 done: {n} utterances, {sum(c['frames'] for c in counts)} frames in {wall:.1f} s "
                f"with nj={nj} ({n / wall:.1f} utt/s); {sum(c['skipped'] for c in counts)} skipped")
