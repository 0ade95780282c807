"""Paired differences between systems in the collected RESULTS (utils/collect_results.py --paired)."""
import json
import math
import os

import pytest

from flowse.metrics.results import main_collect, paired_difference, parse_pairs


def write_system(root, name, ovrl: dict, test_set="test_a"):
    d = os.path.join(root, name, f"scores_{test_set}")
    os.makedirs(d)
    with open(os.path.join(d, "OVRL"), "w") as f:
        f.writelines(f"{k} {v}\n" for k, v in ovrl.items())
    with open(os.path.join(root, name, "results.json"), "w") as f:
        json.dump({test_set: {"OVRL": sum(ovrl.values()) / len(ovrl)}}, f)


def test_paired_difference_mean_and_standard_error(tmp_path, capsys):
    root = str(tmp_path)
    write_system(root, "base", {"u1": 2.0, "u2": 2.5, "u3": 3.0, "u4": 1.0})
    write_system(root, "sys", {"u1": 2.1, "u2": 2.7, "u3": 3.0, "u4": float("nan"), "u5": 9.0})
    mean, se, n = paired_difference(f"{root}/sys", f"{root}/base", "test_a", "OVRL")
    d = [0.1, 0.2, 0.0]  # u4 undefined in sys, u5 not in base: left out
    m = sum(d) / 3
    assert n == 3 and mean == pytest.approx(m)
    assert se == pytest.approx(math.sqrt(sum((x - m) ** 2 for x in d) / 2 / 3))
    assert main_collect([root, "--paired", "sys:base exp/missing:base"]) == 0
    out = capsys.readouterr().out
    assert "| sys - base | test_a | 3 |" in out and f"+{m:.3f} ± {se:.3f}" in out
    assert "missing" not in out


def test_parse_pairs_rejects_a_missing_base():
    assert parse_pairs("exp/grpo_mini:exp/pretrain_mini") == [("grpo_mini", "pretrain_mini")]
    with pytest.raises(ValueError, match="SYSTEM:BASE"):
        parse_pairs("exp/grpo_mini")
