"""Stage 4 training: resume equivalence, non-finite step handling, the bin's outputs, marker and learning."""
import json
import os

import numpy as np
import pytest
import torch

from flowse.data.kaldi import ArkWriter
from flowse.features.mel import MelConfig
from flowse.train.pretrain import PretrainConfig, PretrainTrainConfig, run_pretrain
from flowse.train.supervised import SupervisedTask
from flowse.train.trainer import Trainer
from flowse.utils.config import load_config, save_config
from flowse.utils.distributed import DistInfo
from flowse.utils.fileio import write_kv

N_MELS = 8
TINY = {
    "model": {"n_mels": N_MELS, "hidden": 16, "depth": 1, "heads": 2, "head_dim": 8, "ffn": 32, "conv_kernel": 3,
              "conv_groups": 4, "time_freq_dim": 8, "dropout": 0.1},
    "flow": {"cfg_dropout": 0.3},
    "data": {"batch_frames": 160, "max_frames": 40, "min_frames": 2, "cache": True},
    "train": {"max_steps": 6, "lr": 3e-3, "warmup_steps": 2, "log_interval": 2, "eval_interval": 3,
              "ckpt_interval": 3, "keep_checkpoints": 5, "ema_decay": 0.9, "progress": False},
    "threads": 1,
    "valid_sample_utts": 1,
}


def make_dump(root, n_train=24, n_valid=4, seed=0):
    """Learnable toy task: clean = smooth pattern, noisy = log(exp(clean) + noise)."""
    rng = np.random.default_rng(seed)
    for name, n in (("train", n_train), ("valid", n_valid)):
        d = os.path.join(root, name)
        os.makedirs(d, exist_ok=True)
        lens = {}
        with ArkWriter(f"{d}/feats.ark", f"{d}/feats.scp") as wn, ArkWriter(f"{d}/spk1_feats.ark", f"{d}/spk1_feats.scp") as wc:
            for i in range(n):
                t = int(rng.integers(12, 70))
                clean = (np.sin(np.arange(t)[:, None] * 0.3 + np.arange(N_MELS)[None] * 0.5 + i) * 2 - 5)
                noisy = np.logaddexp(clean, rng.normal(-4, 0.7, size=clean.shape))
                wn[f"{name}{i:03d}"] = noisy.astype(np.float32)
                wc[f"{name}{i:03d}"] = clean.astype(np.float32)
                lens[f"{name}{i:03d}"] = t
        write_kv(f"{d}/utt2num_frames", lens)
    stats = {"feats": {"mean": [-3.5] * N_MELS, "std": [1.2] * N_MELS}, "spk1_feats": {"mean": -5.0, "std": 1.4}}
    with open(os.path.join(root, "train", "stats.json"), "w") as f:
        json.dump(stats, f)
    save_config(MelConfig(n_mels=N_MELS), os.path.join(root, "mel.yaml"))  # stage 2 records its mel config
    return root


@pytest.fixture(scope="module")
def dump(tmp_path_factory):
    return make_dump(str(tmp_path_factory.mktemp("dump")))


def _cfg(**over) -> PretrainConfig:
    return load_config(PretrainConfig, None, {**TINY, **over})


def _weights(exp):
    return torch.load(os.path.join(exp, "model.pt"), weights_only=True)["model"]


def test_resume_gives_the_same_weights_as_one_run(dump, tmp_path):
    cfg = _cfg()
    one = str(tmp_path / "one")
    run_pretrain(cfg, dump, one, None, "cpu")
    two = str(tmp_path / "two")
    assert run_pretrain(cfg, dump, two, None, "cpu", stop_at=2) is None  # "killed" after step 2
    assert not os.path.exists(os.path.join(two, "model.pt"))
    assert os.path.exists(os.path.join(two, "checkpoint_2.pt"))
    run_pretrain(cfg, dump, two, None, "cpu", resume=True)
    a, b = _weights(one), _weights(two)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6, rtol=0), k
    ca = torch.load(os.path.join(one, "checkpoint_6.pt"), weights_only=True)
    cb = torch.load(os.path.join(two, "checkpoint_6.pt"), weights_only=True)
    for k in ca["model"]:  # the raw (non-EMA) weights too
        assert torch.allclose(ca["model"][k], cb["model"][k], atol=1e-6, rtol=0), k
    assert (ca["data"]["epoch"], ca["data"]["index"]) == (cb["data"]["epoch"], cb["data"]["index"])
    assert not torch.equal(a["dit.proj_out.weight"], ca["model"]["dit.proj_out.weight"])  # model.pt holds the EMA
    # metrics.jsonl of the resumed run has each step once
    rows = [json.loads(x) for x in open(os.path.join(two, "metrics.jsonl"))]
    train_steps = [r["step"] for r in rows if "loss" in r]
    assert train_steps == [2, 4, 6]


class _ToyLoader:
    def iter_from(self, epoch, index):
        g = torch.Generator().manual_seed(0)
        while True:
            yield epoch, index, {"x": torch.randn(4, 3, generator=g)}
            index += 1


def _toy_trainer(tmp_path, nan_steps, max_bad=2, max_steps=5):
    calls = {"n": 0}

    def loss_fn(module, batch, gen):
        calls["n"] += 1
        loss = (module(batch["x"]) ** 2).mean()
        return (loss * float("nan") if calls["n"] in nan_steps else loss), {}

    cfg = PretrainTrainConfig(max_steps=max_steps, lr=1e-2, warmup_steps=0, log_interval=1, eval_interval=100,
                              ckpt_interval=100, max_bad_steps=max_bad, progress=False)
    torch.manual_seed(0)
    return Trainer(SupervisedTask(torch.nn.Linear(3, 2), cfg, DistInfo(), _ToyLoader(), loss_fn), cfg, str(tmp_path))


def test_non_finite_steps_are_skipped_and_counted(tmp_path):
    tr = _toy_trainer(tmp_path, nan_steps={2, 3})
    tr.fit(resume=False)
    assert tr.step == 5 and tr.bad_steps == 2 and tr.bad_in_a_row == 0
    assert all(torch.isfinite(p).all() for p in tr.task.model.parameters())
    rows = [json.loads(x) for x in open(tmp_path / "metrics.jsonl")]
    assert rows[-1]["skipped_steps"] == 2 and np.isfinite(rows[-1]["loss"])


def test_too_many_consecutive_non_finite_steps_stop_training(tmp_path):
    tr = _toy_trainer(tmp_path, nan_steps={2, 3, 4, 5}, max_bad=3)
    with pytest.raises(RuntimeError, match="4 consecutive steps with a non-finite loss"):
        tr.fit(resume=False)


def test_bin_outputs_marker_and_skip(dump, tmp_path, capsys):
    import yaml

    from flowse.bin import pretrain

    conf = tmp_path / "pretrain.yaml"
    conf.write_text(yaml.safe_dump(TINY))
    exp = tmp_path / "exp" / "pretrain_tiny"
    voc = tmp_path / "exp" / "vocoder_x"
    argv = ["--config", str(conf), "--dump_dir", dump, "--exp_dir", str(exp), "--vocoder_dir", str(voc),
            "--device", "cpu", "--train.max_steps", "4", "--model.depth", "2"]
    assert pretrain.main(argv) == 0
    for f in ("model.pt", "config.yaml", "vocoder_dir", "metrics.jsonl", "eval.jsonl", "train.log", "train_curves.png",
              "checkpoint_4.pt", ".pretrain.done"):
        assert (exp / f).exists(), f
    cfg = yaml.safe_load((exp / "config.yaml").read_text())
    assert cfg["train"]["max_steps"] == 4 and cfg["model"]["depth"] == 2  # overrides resolved
    assert (exp / "vocoder_dir").read_text().strip() == "../vocoder_x"
    rows = [json.loads(x) for x in open(exp / "metrics.jsonl")]
    train = [r for r in rows if "loss" in r]
    assert {"loss", "lr", "grad_norm", "steps_per_s", "audio_s_per_s", "eta_s"} <= set(train[-1])
    assert train[-1]["audio_s_per_s"] > 0
    evals = [json.loads(x) for x in open(exp / "eval.jsonl")]
    assert any("valid_loss" in r and "valid_mel_l1" in r for r in evals)
    mtime = os.path.getmtime(exp / "model.pt")
    assert pretrain.main(argv) == 0  # marker present: skipped
    assert os.path.getmtime(exp / "model.pt") == mtime
    assert "skipping" in (exp / "train.log").read_text()


def bin_setup(tmp_path, max_steps: int = 3):
    """A toy dump, the TINY yaml and the pretrain bin's argv for them: ``(dump_dir, exp_dir, argv)``."""
    import yaml

    dump = make_dump(str(tmp_path / "dump"))
    conf = tmp_path / "pretrain.yaml"
    conf.write_text(yaml.safe_dump(TINY))
    exp = tmp_path / "exp"
    return dump, exp, ["--config", str(conf), "--dump_dir", dump, "--exp_dir", str(exp), "--device", "cpu",
                       "--train.max_steps", str(max_steps)]


def test_bin_changed_config_or_data_retrains_instead_of_resuming(tmp_path):
    """A yaml edited in place (or a redumped train set) must not continue the old run's checkpoints:
    with max_steps unchanged that would keep the old model under the new config."""
    import yaml

    from flowse.bin import pretrain

    dump, exp, argv = bin_setup(tmp_path)
    assert pretrain.main(argv) == 0
    first = _weights(exp)
    assert pretrain.main(argv + ["--train.lr", "1e-2"]) == 0
    rows = [json.loads(x) for x in open(exp / "metrics.jsonl") if "loss" in x]
    assert [(r["step"], r["lr"]) for r in rows][0] == (2, pytest.approx(1e-2))  # trained again from step 0
    assert any(not torch.equal(first[k], v) for k, v in _weights(exp).items())
    assert yaml.safe_load((exp / "config.yaml").read_text())["train"]["lr"] == 1e-2
    # same config, killed before its marker: resumes (nothing left to train, the weights are kept)
    os.unlink(exp / ".pretrain.done")
    kept = _weights(exp)
    assert pretrain.main(argv + ["--train.lr", "1e-2"]) == 0
    assert "already at step 3" in (exp / "train.log").read_text().splitlines()[-1]
    assert all(torch.equal(kept[k], v) for k, v in _weights(exp).items())
    # the training features rewritten by stage 2 (a new file): a new run
    os.replace(os.path.join(dump, "train", "feats.scp"), os.path.join(dump, "train", "feats.tmp"))
    with open(os.path.join(dump, "train", "feats.tmp")) as f, open(os.path.join(dump, "train", "feats.scp"), "w") as g:
        g.write(f.read())
    assert pretrain.main(argv + ["--train.lr", "1e-2"]) == 0
    log = (exp / "train.log").read_text().split("feats.scp changed")
    assert len(log) == 2 and "not resuming" in log[1] and "train from step 0" in log[1]
    # only the step budget raised: the run continues from its last checkpoint
    assert pretrain.main(argv + ["--train.lr", "1e-2", "--train.max_steps", "5"]) == 0
    log = (exp / "train.log").read_text().split("feats.scp changed")[1].split("config changed")
    assert len(log) == 2 and "resumed from" in log[1] and "checkpoint_3.pt" in log[1] and "from step 3 to 5" in log[1]


def test_training_learns_the_toy_task(dump, tmp_path):
    cfg = _cfg(train={**TINY["train"], "max_steps": 60, "eval_interval": 10, "ckpt_interval": 60, "ema_decay": 0.0,
                      "warmup_steps": 5},
               model={**TINY["model"], "dropout": 0.0}, valid_sample_utts=2)
    run_pretrain(cfg, dump, str(tmp_path), None, "cpu")
    rows = [json.loads(x) for x in open(tmp_path / "eval.jsonl") if "valid_loss" in x]
    first, last = rows[0], rows[-1]
    assert last["valid_loss"] < 0.8 * first["valid_loss"], (first, last)
    # enhanced mels are closer to clean than the noisy input is
    assert last["valid_mel_l1"] < last["valid_noisy_mel_l1"], last


def test_fresh_start_discards_a_previous_runs_checkpoints(tmp_path):
    from flowse.utils.checkpoint import list_checkpoints

    tr = _toy_trainer(tmp_path, nan_steps=set(), max_steps=4)
    tr.cfg.ckpt_interval = 1
    tr.cfg.keep_checkpoints = 0
    tr.fit(resume=False)
    assert [s for s, _ in list_checkpoints(str(tmp_path))] == [1, 2, 3, 4]
    again = _toy_trainer(tmp_path, nan_steps=set(), max_steps=2)
    again.fit(resume=False)
    assert [s for s, _ in list_checkpoints(str(tmp_path))] == [2]  # a stale checkpoint_4 would be resumed from
    assert [json.loads(x)["step"] for x in open(tmp_path / "metrics.jsonl")] == [1, 2]
