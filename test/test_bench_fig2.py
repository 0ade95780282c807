"""Fig. 2 tooling: held-out paired changes (step - base) with standard errors, the export column, the PNG."""
import json
import math

import numpy as np
import pytest

from flowse.bench.fig2 import held_out_table, load_runs, main, paired_change, trailing_mean
from flowse.utils.errors import UserError

KEYS = ["u1", "u2", "u3"]
BASE = {"OVRL": [2.0, 2.5, 3.0], "DMOS": [3.0, float("nan"), 3.2]}


def _eval_row(step, keys, values):
    return {"step": step, "utts": len(keys), **{f"eval/{m}": float(np.nanmean(v)) for m, v in values.items()},
            "utt_keys": keys, "utt_values": values}


def _exp(root, name, last_values, last_keys, exported, reward, base=BASE):
    d = root / name
    d.mkdir()
    with open(d / "metrics.jsonl", "w") as f:
        for it in range(6):
            f.write(json.dumps({"iteration": it, "step": it + 1, "reward_mean": 0.5 + 0.01 * it,
                                "train/OVRL": 2.0 + 0.02 * it, "train/SPK": 0.8}) + "\n")
    with open(d / "eval.jsonl", "w") as f:
        for row in (_eval_row(0, KEYS, base), _eval_row(3, KEYS, base), _eval_row(6, last_keys, last_values)):
            f.write(json.dumps(row) + "\n")
    (d / "export.json").write_text(json.dumps({"last_step": 6, "step": exported, "summary": "."}))
    (d / "config.yaml").write_text(f"rollout: {{noise_level: 0.4}}\nreward: {{metrics: {reward}, "
                                   "std_normalize: frozen}\n")
    return str(d)


def test_paired_changes_table_and_png(tmp_path, capsys):
    # run 1 lists its last evaluation's utterances in another order: pairing goes by key
    ovrl = _exp(tmp_path, "grpo_mini_fig2_ovrl", {"OVRL": [3.2, 2.1, 2.8], "DMOS": [3.0, 2.8, 3.1]},
                ["u3", "u1", "u2"], exported=3, reward="[OVRL]")
    multi = _exp(tmp_path, "grpo_mini_fig2_multi", {"OVRL": [2.0, 2.6, 3.1], "DMOS": [3.1, 2.9, 3.5]},
                 KEYS, exported=6, reward="[OVRL, SPK]")
    runs = load_runs([ovrl, multi])
    assert [r.label for r in runs] == ["ovrl", "multi"]
    base, last = runs[0].evals[0], runs[0].evals[-1]
    # OVRL: u1 2.1-2.0, u2 2.8-2.5, u3 3.2-3.0 = [0.1, 0.3, 0.2]: mean 0.2, std 0.1, SE 0.1/sqrt(3)
    mean, se, n = paired_change(last, base, "OVRL")
    assert n == 3 and mean == pytest.approx(0.2) and se == pytest.approx(0.1 / math.sqrt(3))
    # DMOS: u2 is undefined at the base, so only u1 (-0.2) and u3 (-0.2) pair: mean -0.2, SE 0
    mean, se, n = paired_change(last, base, "DMOS")
    assert n == 2 and mean == pytest.approx(-0.2) and se == pytest.approx(0.0, abs=1e-12)
    # multi: OVRL [0.0, 0.1, 0.1] -> mean 1/15, SE std([0, .1, .1], ddof=1)/sqrt(3) = 0.0333;
    # DMOS (u1, u3) [0.1, 0.3] -> mean 0.2, SE 0.1
    mean, se, n = paired_change(runs[1].evals[-1], runs[1].evals[0], "OVRL")
    assert mean == pytest.approx(1 / 15) and se == pytest.approx(np.sqrt(1 / 300) / np.sqrt(3))
    table = held_out_table(runs, ["OVRL", "SPK", "DMOS"])
    lines = table.splitlines()
    assert lines[0] == "| run | reward | utts | last step | exported step | exported = last | OVRL | DMOS |"
    assert lines[2] == "| base (step 0) | | 3 | 0 | | | 2.5000 | 3.1000 |"
    assert lines[3] == "| ovrl | R: OVRL, a 0.4 | 3 | 6 | 3 | no | +0.2000 +- 0.0577 | -0.2000 +- 0.0000 |"
    assert lines[4] == ("| multi | R: OVRL+SPK, a 0.4, frozen | 3 | 6 | 6 | yes | +0.0667 +- 0.0333 "
                        "| +0.2000 +- 0.1000 |")
    assert "Warning" not in table
    out = tmp_path / "fig2.png"
    assert main(["--exps", ovrl, multi, "--out", str(out), "--table", str(tmp_path / "fig2.md")]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
    assert (tmp_path / "fig2.md").read_text().splitlines()[3] == lines[3]
    assert "wrote" in capsys.readouterr().out


def test_other_base_warns_and_user_errors(tmp_path):
    a = _exp(tmp_path, "a", BASE, KEYS, exported=6, reward="[OVRL]")
    other_base = {"OVRL": [2.0, 2.5, 3.1], "DMOS": BASE["DMOS"]}
    b = _exp(tmp_path, "b", BASE, KEYS, exported=6, reward="[SPK]", base=other_base)
    assert "Warning: the runs' step-0 evaluations differ" in held_out_table(load_runs([a, b]), ["OVRL"])
    with pytest.raises(UserError, match="no such directory"):
        main(["--exps", str(tmp_path / "nope"), "--out", str(tmp_path / "x.png")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no metrics.jsonl or eval.jsonl"):
        load_runs([str(tmp_path / "empty")])
    with pytest.raises(UserError, match="not logged"):
        main(["--exps", a, "--out", str(tmp_path / "x.png"), "--metrics", "PESQ"])


def test_trailing_mean_skips_undefined():
    np.testing.assert_allclose(trailing_mean(np.array([1.0, 2.0, np.nan, 4.0]), 2), [1.0, 1.5, 2.0, 4.0])


def test_time_axis_table_gain_per_cpu_minute(tmp_path):
    """The equal-compute view: x = CPU-minutes of the rows, the rewarded metric's gain per CPU-minute."""
    d = _exp(tmp_path, "nft_mini_equal", {"OVRL": [2.1, 2.8, 3.2], "DMOS": [3.0, 2.8, 3.1]}, KEYS, exported=6,
             reward="[OVRL]")
    rows = [json.loads(ln) for ln in open(f"{d}/eval.jsonl")]
    for row, cpu in zip(rows, (0.0, 60.0, 240.0)):
        row["train_cpu_seconds"] = cpu
    with open(f"{d}/eval.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    with open(f"{d}/config.yaml", "a") as f:
        f.write("method: nft\n")
    table = held_out_table(load_runs([d]), ["OVRL"], "cpu_minutes")
    lines = table.splitlines()
    assert lines[0].endswith("| OVRL | cpu-minutes | rewarded gain per cpu-minute |")
    # OVRL +0.2 +- 0.0577 over 4 CPU-minutes: +0.05 +- 0.0144 per CPU-minute; NFT runs say so, without a
    assert lines[3] == "| nft_mini_equal | NFT, R: OVRL | 3 | 6 | 6 | yes | +0.2000 +- 0.0577 | 4.0 | OVRL +0.0500 +- 0.0144 |"
    assert main(["--exps", d, "--x", "cpu_minutes", "--out", str(tmp_path / "c.png")]) == 0
