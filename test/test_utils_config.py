"""The config loader (flowse.utils.config) and atomic file writing (flowse.utils.fileio)."""
import os
from dataclasses import dataclass, field
from typing import Literal, Optional

import pytest

from flowse.utils.config import ConfigError, check, load_config, parse_overrides, save_config
from flowse.utils.fileio import atomic_open, c_sorted, check_same_keys, read_kv, write_kv


@dataclass
class Inner:
    depth: int = 2
    act: Literal["relu", "gelu"] = "gelu"


@dataclass
class Cfg:
    lr: float = 1e-4
    name: str = "x"
    flag: bool = False
    ids: list[int] = field(default_factory=list)
    rng: tuple[float, float] = (0.0, 1.0)
    maybe: Optional[float] = None
    model: Inner = field(default_factory=Inner)
    sets: dict[str, Inner] = field(default_factory=dict)

    def __post_init__(self):
        check(self.lr > 0, f"lr must be positive, got {self.lr}")


def _yaml(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return str(p)


def test_yaml_then_overrides_win(tmp_path):
    path = _yaml(tmp_path, "lr: 0.01\nmodel: {depth: 4}\nsets: {a: {act: relu}}\n")
    cfg = load_config(Cfg, path, ["--lr", "5e-5", "--model.act", "relu", "--flag", "true", "--ids", "[1,2]",
                                  "--sets.b.depth", "7", "--rng", "[-5, 5]", "--maybe=0.5"])
    assert cfg.lr == 5e-5 and cfg.flag is True and cfg.ids == [1, 2] and cfg.rng == (-5.0, 5.0)
    assert cfg.model == Inner(4, "relu") and cfg.maybe == 0.5
    assert cfg.sets == {"a": Inner(2, "relu"), "b": Inner(7, "gelu")}
    assert load_config(Cfg, path, "--name 12").name == "12"  # one string, yaml-parsed, str field keeps it


def test_unknown_key_lists_allowed_keys(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['lrr'\].*allowed keys: \[.*'lr'"):
        load_config(Cfg, _yaml(tmp_path, "lrr: 1\n"))
    with pytest.raises(ConfigError, match=r"model: unknown key\(s\) \['width'\]"):
        load_config(Cfg, None, ["--model.width", "3"])


def test_bad_literal_names_the_choices():
    with pytest.raises(ConfigError, match=r"model.act: 'tanh' is not allowed; choose one of \['relu', 'gelu'\]"):
        load_config(Cfg, None, ["--model.act", "tanh"])


def test_bad_types_and_range_checks(tmp_path):
    with pytest.raises(ConfigError, match="flag: expected true or false"):
        load_config(Cfg, None, ["--flag", "yes please"])
    with pytest.raises(ConfigError, match="depth: expected an integer"):
        load_config(Cfg, None, ["--model.depth", "2.5"])
    with pytest.raises(ConfigError, match="rng: expected 2 values"):
        load_config(Cfg, None, ["--rng", "[1]"])
    with pytest.raises(ConfigError, match="lr must be positive"):
        load_config(Cfg, None, ["--lr", "-1"])
    with pytest.raises(ConfigError, match="not found"):
        load_config(Cfg, str(tmp_path / "missing.yaml"))
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(Cfg, _yaml(tmp_path, "- 1\n- 2\n"))


def test_override_parsing():
    assert parse_overrides(["--a.b-c", "3", "--d", "x y", "--e=[1, 2]", "--f", ""]) == {
        "a": {"b_c": 3}, "d": "x y", "e": [1, 2], "f": ""}
    assert parse_overrides("--max_steps 2000 --lr 5e-5") == {"max_steps": 2000, "lr": "5e-5"}  # yaml 1.1 scalar
    assert load_config(Cfg, None, "--lr 5e-5").lr == 5e-5  # float fields accept it
    with pytest.raises(ConfigError, match="has no value"):
        parse_overrides(["--lr"])
    with pytest.raises(ConfigError, match="expected --key value"):
        parse_overrides(["lr", "3"])


def test_save_config_round_trips(tmp_path):
    cfg = load_config(Cfg, None, ["--sets.a.depth", "3", "--maybe", "0.25"])
    save_config(cfg, str(tmp_path / "out" / "config.yaml"))
    assert load_config(Cfg, str(tmp_path / "out" / "config.yaml")) == cfg


def test_atomic_open_never_leaves_a_partial_file(tmp_path):
    p = str(tmp_path / "f.txt")
    with atomic_open(p) as f:
        f.write("old\n")
    with pytest.raises(RuntimeError):
        with atomic_open(p) as f:
            f.write("half of the new cont")
            raise RuntimeError("killed")
    assert open(p).read() == "old\n" and os.listdir(tmp_path) == ["f.txt"]


def test_kv_lists_sorted_and_checked(tmp_path):
    p = str(tmp_path / "utt2x")
    write_kv(p, {"b": 1, "B": 2, "a_1": 3, "a-1": 4})
    assert list(read_kv(p)) == ["B", "a-1", "a_1", "b"] == c_sorted(["b", "B", "a_1", "a-1"])
    with open(p, "a") as f:
        f.write("b 5\n")
    with pytest.raises(ValueError, match="duplicate key 'b'"):
        read_kv(p)
    with pytest.raises(ValueError, match=r"only in x: \['k2'\]; only in y: \['k3'\]"):
        check_same_keys({"x": ["k1", "k2"], "y": ["k1", "k3"]})
