"""Stage 0 entry: the corpus config (``conf/<c>/corpus.yaml``) and ``prepare_corpus``.

``corpus.yaml`` has a shared ``seed``, the synthetic-RIR section ``rir`` (used by
the mini corpus, and by dns2020 when no ``rir_dirs`` are given), and one section
per corpus (``mini``, ``dns2020``); ``--corpus`` picks the section that is used. With the mini
corpus, ``real_speech`` names the dir of real recordings for the test set ``test_real_speech``
(``corpus_real``).
Stage 0 lists audio files, each at its own rate (the mini corpus writes 16 kHz, DNS files are
what they are); stage 1 resamples every source to its ``sample_rate`` on reading.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from flowse.data.corpus_dns import DnsConfig, prepare_dns
from flowse.data.corpus_mini import MiniConfig, prepare_mini, synth_rir_lists
from flowse.data.corpus_real import RealSpeechConfig
from flowse.data.rir import RirSynthConfig

CORPORA = ("mini", "dns2020")


@dataclass
class CorpusConfig:
    seed: int = 2020
    rir: RirSynthConfig = field(default_factory=RirSynthConfig)
    mini: MiniConfig = field(default_factory=MiniConfig)
    dns2020: DnsConfig = field(default_factory=DnsConfig)
    real_speech: RealSpeechConfig = field(default_factory=RealSpeechConfig)


def prepare_corpus(
    corpus: str, cfg: CorpusConfig, out_dir: str, data_dir: str, dns_root: str | None = None, nj: int = 1, cmd: str = "local"
) -> dict:
    """Run stage 0 for ``corpus``; returns the counts it logged."""
    if corpus == "mini":
        return prepare_mini(cfg.mini, cfg.rir, cfg.seed, out_dir, nj, cmd)
    if corpus == "dns2020":
        if not dns_root:
            raise ValueError("--corpus dns2020 needs --dns_root (the DNS-Challenge interspeech2020 checkout)")

        def rirs(out: str):
            lists = synth_rir_lists(cfg.rir, cfg.seed, out, ("train", "valid"), nj, cmd)
            return lists["train"], lists["valid"]

        return prepare_dns(cfg.dns2020, dns_root, os.path.abspath(out_dir), data_dir, cfg.seed, rirs)
    raise ValueError(f"unknown corpus {corpus!r}; choose one of {list(CORPORA)}")
