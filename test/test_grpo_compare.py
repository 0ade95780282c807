"""Paired GRPO run comparison: block means and standard errors, and the comparability check."""
import json

import numpy as np
import pytest

from flowse.bench.compare_grpo import main
from flowse.rl.compare import check_comparable, load_history, paired_differences
from flowse.train.plot import read_metrics


def _write(d, rewards, ovrl):
    d.mkdir()
    with open(d / "metrics.jsonl", "w") as f:
        for i, (r, o) in enumerate(zip(rewards, ovrl)):
            f.write(json.dumps({"iteration": i, "reward_mean": r, "train/OVRL": o}) + "\n")
    return str(d)


def test_paired_blocks_and_check(tmp_path, capsys):
    base = _write(tmp_path / "base", [0.5, 0.4, 0.6, 0.5, 0.55], [2.0, 1.6, 2.4, 2.0, 2.2])
    run = _write(tmp_path / "run", [0.5, 0.41, 0.62, 0.53, 0.55], [2.0, 1.64, 2.48, 2.12, 2.2])
    blocks = paired_differences(load_history(run), load_history(base), "train/OVRL", block=2)
    d = np.array([0.0, 0.04, 0.08, 0.12, 0.0])
    assert [(a, b) for a, b, _, _ in blocks] == [(0, 1), (2, 3), (4, 4)]
    np.testing.assert_allclose([m for _, _, m, _ in blocks], [0.02, 0.10, 0.0], atol=1e-12)
    np.testing.assert_allclose(blocks[0][3], d[:2].std(ddof=1) / np.sqrt(2), atol=1e-12)
    assert np.isnan(blocks[2][3])
    assert main([run, base, "--metrics", "OVRL", "--block", "2"]) == 0
    assert "it 2-3: +0.1000" in capsys.readouterr().out
    other = _write(tmp_path / "other", [0.3, 0.4], [1.0, 1.0])
    with pytest.raises(ValueError, match="iteration 0"):
        check_comparable(load_history(other), load_history(base))
    with pytest.raises(FileNotFoundError, match="metrics.jsonl"):
        load_history(str(tmp_path))
    # a half-written last line (a live run's log): an error here, skipped by the curve plotter
    with open(tmp_path / "base" / "metrics.jsonl", "a") as f:
        f.write('{"iteration": 5, "rew')
    with pytest.raises(json.JSONDecodeError):
        load_history(base)
    assert len(read_metrics(str(tmp_path / "base" / "metrics.jsonl"))) == 5
