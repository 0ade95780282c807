"""One-line user errors of the commands (flowse.utils.cli): a config mistake or a missing file prints
``<command>: error: <message>`` and exits 2, without a traceback; a bug keeps its traceback."""
import os
import subprocess
import sys

import pytest

from conftest import RECIPE, ROOT
from flowse.utils import cli
from flowse.utils.config import ConfigError
from flowse.utils.errors import UserError


def _simulate(tmp_path, *extra):
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
    argv = [sys.executable, "-m", "flowse.bin.simulate", "--local_dir", str(tmp_path / "local"),
            "--data_dir", str(tmp_path / "data"), *extra]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("extra, expected", [
    (["--config", os.path.join(RECIPE, "conf", "tiny", "simulate.yaml"), "--sets.train.snr_rang", "[0,5]"],
     ["unknown key(s) ['snr_rang']", "allowed keys", "snr_range"]),
    (["--config", os.path.join(RECIPE, "conf", "tiny", "simulate.yaml"), "--reverb_target", "wet"],
     ["reverb_target", "'wet' is not allowed", "['early', 'dry', 'reverberant']"]),
    (["--config", "no/such/simulate.yaml"], ["config file not found: no/such/simulate.yaml"]),
])
def test_config_mistake_is_one_line(tmp_path, extra, expected):
    r = _simulate(tmp_path, *extra)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert "Traceback" not in r.stderr and len(lines) == 1, r.stderr
    assert lines[0].startswith("flowse.bin.simulate: error: ")
    for text in expected:
        assert text in lines[0], lines[0]


def test_missing_stage0_lists_is_one_line(tmp_path):
    r = _simulate(tmp_path, "--config", os.path.join(RECIPE, "conf", "tiny", "simulate.yaml"))
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("flowse.bin.simulate: error: ") and str(tmp_path / "local") in last


def test_run_keeps_tracebacks_of_bugs_and_exit_status(capsys):
    def user_mistake():
        raise UserError("--sets is empty;\n give one")

    with pytest.raises(SystemExit) as e:
        cli.run(user_mistake)
    assert e.value.code == 2 and capsys.readouterr().err.endswith(": error: --sets is empty; give one\n")
    with pytest.raises(SystemExit) as e:
        cli.run(lambda: 3)
    assert e.value.code == 3
    with pytest.raises(SystemExit) as e:
        cli.run(lambda: None)
    assert e.value.code == 0
    with pytest.raises(KeyError):  # a bug: not caught
        cli.run(lambda: {}["x"])
    assert issubclass(ConfigError, ValueError) and ConfigError in cli.USER_ERRORS
