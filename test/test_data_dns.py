"""The DNS2020 scanner (stage 0, --corpus dns2020) on a small fake tree of tiny wav files."""
import json
import os

import numpy as np
import pytest
import soundfile as sf

from flowse.data.corpus_dns import DnsConfig, CleanDir, prepare_dns, prepare_test_sets
from flowse.data.datadir import check_data_dir, read_utt2info
from flowse.utils.fileio import read_kv


def _wav(path, seconds=0.2, sr=16000, channels=1):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    x = 0.1 * np.random.default_rng(len(path)).standard_normal((int(seconds * sr), channels))
    sf.write(path, x.astype(np.float32), sr)


@pytest.fixture()
def dns(tmp_path):
    root = tmp_path / "DNS-Challenge"
    ds = root / "datasets"
    readers = ["00012", "00345", "06709", "10001", "10002", "20000"]
    for r in readers:
        for b in range(2):
            _wav(str(ds / "clean" / f"book_{b:05d}_chp_0009_reader_{r}_{b}.wav"))
    _wav(str(ds / "clean" / "no_reader_tag.wav"))
    for name in ["door_1.wav", "fan/fan_2.wav", "fan/fan_3.wav", "traffic.wav"]:
        _wav(str(ds / "noise" / name))
    (ds / "noise" / "README.txt").write_text("not audio")
    for s in ["no_reverb", "with_reverb"]:
        base = ds / "test_set" / "synthetic" / s
        for i, (snr, tl) in enumerate([(0, -21), (15, -33), (7, -25)]):
            fid = [0, 10, 2][i]
            _wav(str(base / "noisy" / f"clnsp{fid}_babble_{fid}_snr{snr}_tl{tl}_fileid_{fid}.wav"), 0.3)
            _wav(str(base / "clean" / f"clean_fileid_{fid}.wav"), 0.3)
    _wav(str(ds / "test_set" / "real_recordings" / "ms_realrec_headset_cleanspeech_1.wav"), 0.4, sr=48000, channels=2)
    _wav(str(ds / "test_set" / "real_recordings" / "ms realrec 2.wav"), 0.4)
    libri = tmp_path / "LibriTTS" / "train-clean-100"
    for spk in ["19", "26", "27"]:
        _wav(str(libri / spk / "198" / f"{spk}_198_000000_000000.wav"))
    return root, libri


def test_dns_scan_lists_and_test_sets(dns, tmp_path):
    root, libri = dns
    out, data = tmp_path / "data" / "local", tmp_path / "data"
    cfg = DnsConfig(valid_speakers=2, extra_clean_dirs=[CleanDir(path=str(libri), name="libritts", valid_speakers=1)],
                    valid_noise_fraction=0.0)
    counts = prepare_dns(cfg, str(root), str(out), str(data), seed=1)
    train, valid = read_kv(str(out / "train_clean.scp")), read_kv(str(out / "valid_clean.scp"))
    utt2spk = read_kv(str(out / "utt2spk"))
    assert len(train) + len(valid) == 13 + 3 and set(utt2spk) == set(train) | set(valid)
    assert utt2spk["reader_06709-book_00001_chp_0009_reader_06709_1"] == "reader_06709"
    assert utt2spk["unknown-no_reader_tag"] == "unknown"
    assert utt2spk["libritts_26-26_198_000000_000000"] == "libritts_26"
    train_spk = {utt2spk[u] for u in train}
    valid_spk = {utt2spk[u] for u in valid}
    assert not train_spk & valid_spk  # held out by speaker
    assert len([s for s in valid_spk if s.startswith("reader_")]) == 2
    assert len([s for s in valid_spk if s.startswith("libritts_")]) == 1
    assert all(u.startswith(utt2spk[u] + "-") for u in utt2spk)  # speaker-prefixed utt ids sort by speaker
    noise = read_kv(str(out / "noise_train.scp"))
    assert sorted(noise) == ["noise-door_1", "noise-fan_fan_2", "noise-fan_fan_3", "noise-traffic"]
    assert all(os.path.isabs(p) and os.path.exists(p) for p in noise.values())
    assert read_kv(str(out / "rir_train.scp")) == {}
    assert counts["speakers"] == 6 + 1 + 3

    for s in ["no_reverb", "with_reverb"]:
        d = str(data / f"test_{s}")
        keys = check_data_dir(d, ("wav.scp", "spk1.scp"))
        assert keys == [f"{s}_fileid_0000", f"{s}_fileid_0002", f"{s}_fileid_0010"]
        wav, spk1 = read_kv(os.path.join(d, "wav.scp")), read_kv(os.path.join(d, "spk1.scp"))
        for k in keys:  # paired by fileid
            fid = int(k.rsplit("_", 1)[1])
            assert wav[k].endswith(f"fileid_{fid}.wav") and "noisy" in wav[k]
            assert spk1[k].endswith(f"clean_fileid_{fid}.wav")
        info = read_utt2info(os.path.join(d, "utt2info"))
        assert info[f"{s}_fileid_0010"]["snr"] == 15 and info[f"{s}_fileid_0010"]["target_level_db"] == -33
        assert info[f"{s}_fileid_0000"]["reverberant_reference"] == (s == "with_reverb")
        assert read_kv(os.path.join(d, "utt2dur"))[keys[0]] == "0.3000"
    real = str(data / "test_real")
    assert check_data_dir(real) == ["real_ms_realrec_2", "real_ms_realrec_headset_cleanspeech_1"]
    assert not os.path.exists(os.path.join(real, "spk1.scp"))
    assert counts["test_no_reverb"] == 3 and counts["test_real"] == 2


def test_dns_test_set_mismatch_names_the_fileid(dns, tmp_path):
    root, _ = dns
    os.unlink(root / "datasets" / "test_set" / "synthetic" / "no_reverb" / "clean" / "clean_fileid_10.wav")
    with pytest.raises(ValueError, match="no_reverb_fileid_0010"):
        prepare_test_sets(str(root / "datasets" / "test_set"), str(tmp_path / "data"))


def test_dns_missing_root_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="dns_root"):
        prepare_dns(DnsConfig(), str(tmp_path / "nope"), str(tmp_path / "o"), str(tmp_path), 1)


def test_dns_bin_with_overrides_and_synthetic_rirs(dns, tmp_path):
    """The stage-0 CLI on the fake tree: yaml + CLI overrides, synthetic RIRs when no rir_dirs, marker and skip."""
    from flowse.bin.prepare_corpus import main

    root, _ = dns
    conf = tmp_path / "corpus.yaml"
    conf.write_text("seed: 3\nrir: {count: {train: 2, valid: 1, test: 0}}\ndns2020: {valid_speakers: 1}\n")
    out = tmp_path / "data" / "local"
    argv = ["--corpus", "dns2020", "--config", str(conf), "--dns_root", str(root), "--out_dir", str(out),
            "--dns2020.valid_noise_fraction", "0.5", "--rir.rt60_range", "[0.4,0.5]"]
    main(argv)
    rirs = read_kv(str(out / "rir_train.scp"))
    info = {k: json.loads(v) for k, v in read_kv(str(out / "rir_info")).items()}
    assert len(rirs) == 2 and len(read_kv(str(out / "rir_valid.scp"))) == 1
    assert all(0.4 <= info[k]["rt60"] <= 0.5 for k in rirs)
    n_train, n_valid = len(read_kv(str(out / "noise_train.scp"))), len(read_kv(str(out / "noise_valid.scp")))
    assert n_train + n_valid == 4 and n_valid >= 1
    saved = open(out / "corpus.yaml").read()
    assert "valid_noise_fraction: 0.5" in saved and os.path.exists(out / ".prepare_corpus_dns2020.done")
    mtime = os.path.getmtime(out / "train_clean.scp")
    main(argv)  # done with the same inputs: skipped
    assert os.path.getmtime(out / "train_clean.scp") == mtime
