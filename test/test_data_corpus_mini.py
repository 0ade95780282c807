"""Mini-corpus planning (talkers, sentences), its config checks, the synthesizers, simulation planning."""
import numpy as np
import pytest

from flowse.data.corpus_mini import MiniConfig, load_sentences, make_speakers, plan_speech
from flowse.utils.jobdirs import key_rng
from flowse.data.simulate import SetConfig, SimulateConfig, plan_set
from flowse.data.tts import synthesize, trim_silence
from flowse.utils.config import ConfigError, load_config
from flowse.utils.fileio import write_kv


def test_sentences_are_plain_and_split_disjoint():
    sets = {n: load_sentences(n) for n in ("train", "valid", "test")}
    assert len(sets["train"]) >= 200 and len(sets["valid"]) >= 30 and len(sets["test"]) >= 50
    assert not set(sets["train"]) & set(sets["test"]) and not set(sets["train"]) & set(sets["valid"])
    for lines in sets.values():
        assert len(set(lines)) == len(lines)
        assert all(3 <= len(s.split()) <= 14 and s[0].isupper() and s[-1] in ".?!" for s in lines)


def test_talkers_disjoint_deterministic_and_planned():
    cfg = MiniConfig()
    spk = make_speakers(cfg, key_rng(1, "speakers"))
    assert spk == make_speakers(cfg, key_rng(1, "speakers"))
    groups = {g: {s["id"] for s in v} for g, v in spk.items()}
    ids = [i for v in groups.values() for i in v]
    assert len(ids) == len(set(ids))
    assert len(groups["train"]) == 2 + 14 and len(groups["test"]) == 1 + 3 and len(groups["babble_train"]) == 6
    variants = {g: {s["variant"] for s in v if s["engine"] == "espeak"} for g, v in spk.items()}
    assert not variants["train"] & variants["test"] and not variants["test"] & variants["babble_test"]
    assert all(cfg.rate_range[0] <= s["rate"] <= cfg.rate_range[1] for s in spk["train"] if s["engine"] == "espeak")
    items = plan_speech(cfg, spk, 1, "/audio")
    assert sum(1 for it in items if it["group"] == "train") == 320
    assert len({it["utt"] for it in items}) == len(items)
    assert all(it["utt"].startswith(it["speaker"]["id"] + "-") and len(it["texts"]) == cfg.max_tries for it in items)
    test_texts = {it["texts"][0] for it in items if it["group"] == "test"}
    assert test_texts <= set(load_sentences("test"))


def test_mini_config_errors():
    with pytest.raises(ConfigError, match="'slt' is in two splits"):
        load_config(MiniConfig, None, ["--flite_voices", "{train: [slt], test: [slt]}"])
    with pytest.raises(ConfigError, match=r"unknown split\(s\) \['dev'\]"):
        load_config(MiniConfig, None, ["--utts", "{dev: 3}"])
    with pytest.raises(ConfigError, match="choose from"):
        load_config(MiniConfig, None, ["--noise_families", "[white, rain]"])


@pytest.mark.parametrize("spk", [
    {"id": "fl-slt", "engine": "flite", "voice": "slt", "variant": "", "rate": 175, "pitch": 50},
    {"id": "es-x", "engine": "espeak", "voice": "en-us", "variant": "f3", "rate": 170, "pitch": 60},
])
def test_synthesize_16k_trimmed(spk, tmp_path):
    x = synthesize(spk, "The old boat drifted slowly toward the quiet shore.", np.random.default_rng(0), str(tmp_path))
    assert x.dtype == np.float32 and 1.5 < len(x) / 16000 < 4.5
    frame = 160
    e = np.array([np.mean(x[i:i + frame] ** 2) for i in range(0, len(x) - frame, frame)])
    assert e[:3].mean() < 0.1 * e.max() and e.max() > 1e-4  # at most a short margin of silence, then speech
    assert list(tmp_path.iterdir()) == []  # temp wavs removed


def test_trim_silence_keeps_margin():
    x = np.zeros(16000 * 3, np.float32)
    x[16000:32000] = 0.5
    y = trim_silence(x, margin=0.1)
    assert len(y) == 16000 + 2 * 1600


def _local(tmp_path, n=6):
    clean = {f"spk{i % 2}-{i:02d}": f"/a/{i}.wav" for i in range(n)}
    write_kv(str(tmp_path / "train_clean.scp"), clean)
    write_kv(str(tmp_path / "utt2spk"), {k: k.split("-")[0] for k in clean})
    write_kv(str(tmp_path / "noise_train.scp"), {"n": "/n.wav"})
    return clean


def test_plan_set_parts_and_repeats(tmp_path):
    clean = _local(tmp_path)
    cfg = SimulateConfig(sets={"a": SetConfig(split="train", clean_part=(2, 2)),
                               "b": SetConfig(split="train", num_utts=4),
                               "c": SetConfig(split="train", num_utts=14)})
    items, ctx = plan_set(cfg, "a", str(tmp_path))
    assert [it["utt"] for it in items] == ["spk0-02", "spk1-01", "spk1-05"]  # every other sorted utterance
    assert {it["spk"] for it in items} == {"spk0", "spk1"} and ctx["cfg"]["clean_part"] == [2, 2]
    items, _ = plan_set(cfg, "b", str(tmp_path))
    assert len(items) == 4 and all(it["utt"] == it["clean"] for it in items)
    items, _ = plan_set(cfg, "c", str(tmp_path))
    assert len(items) == 14 and len({it["utt"] for it in items}) == 14
    uses = {k: sum(it["clean"] == k for it in items) for k in clean}
    assert set(uses.values()) <= {2, 3} and all(it["utt"].startswith(it["clean"] + "-") for it in items)
    assert [it["utt"] for it in items] == sorted(it["utt"] for it in items)
    with pytest.raises(FileNotFoundError, match="valid_clean.scp not found"):
        plan_set(SimulateConfig(sets={"v": SetConfig(split="valid")}), "v", str(tmp_path))


def test_simulate_config_checks():
    for args, msg in [(["--sets.x.split", "train", "--sets.x.clean_part", "[3,2]"], "clean_part"),
                      (["--sets.x.split", "train", "--sets.x.reverb_prob", "1.5"], "reverb_prob"),
                      (["--sets.x.split", "train", "--sets.x.level_range", "[-10,5]"], "level_range"),
                      (["--sets.x.split", "dev"], r"choose one of \['train', 'valid', 'test'\]"),
                      (["--sets.x.split", "train", "--sets.x.target", "late"], "early"),
                      (["--reverb_target", "wet"], "reverb_target"),
                      (["--sets.a/b.split", "train"], "set name")]:
        with pytest.raises(ConfigError, match=msg):
            load_config(SimulateConfig, None, args)


@pytest.mark.parametrize("conf", ["mini", "tiny", "paper"])
def test_recipe_configs_load(conf):
    import os

    from conftest import RECIPE
    from flowse.data.corpus import CorpusConfig
    from flowse.features.mel import MelConfig

    d = os.path.join(RECIPE, "conf", conf)
    corpus = load_config(CorpusConfig, os.path.join(d, "corpus.yaml"))
    sim = load_config(SimulateConfig, os.path.join(d, "simulate.yaml"))
    cosyvoice2 = MelConfig(sample_rate=24000, n_fft=1920, hop_length=480, win_length=1920, magnitude_eps=1e-9)
    assert load_config(MelConfig, os.path.join(d, "mel.yaml")) == (cosyvoice2 if conf == "paper" else MelConfig())
    if conf == "paper":
        assert set(sim.sets) == {"train", "valid"} and sim.sets["train"].snr_range == (0.0, 40.0)
    else:
        assert set(sim.sets) == {"train", "valid", "test_no_reverb", "test_with_reverb", "test_real_speech"}
        assert sim.sets["test_with_reverb"].reverb_prob == 1.0 and sim.sets["test_no_reverb"].reverb_prob == 0.0
        assert sim.sets["test_no_reverb"].snr_range == (0.0, 20.0)
    if conf == "tiny":
        assert corpus.mini.utts == {"train": 12, "valid": 4, "test": 8} and corpus.mini.max_seconds <= 2.0
