"""utils/parse_options.sh semantics (Kaldi style): declared options only, booleans checked, --help."""
import os
import subprocess

import pytest

from conftest import ROOT

SCRIPT = """#!/usr/bin/env bash
set -euo pipefail
stage=0
stop_stage=10
use_gpu=false
exp_name=base
help_message="Usage: demo.sh [options] <dir>"
. {parse}
echo "stage=$stage stop_stage=$stop_stage use_gpu=$use_gpu exp_name=$exp_name rest=$*"
"""


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    d = tmp_path_factory.mktemp("po")
    path = d / "demo.sh"
    path.write_text(SCRIPT.format(parse=os.path.join(ROOT, "utils", "parse_options.sh")))
    (d / "extra.conf").write_text("exp_name=from_config\nstage=7\n")
    return str(path)


def run(demo, *args):
    return subprocess.run(["bash", demo, *args], capture_output=True, text=True, cwd=os.path.dirname(demo))


def test_values_are_set_dash_or_underscore(demo):
    r = run(demo, "--stage", "3", "--stop-stage", "5", "--use_gpu", "true", "--exp_name", "my exp", "dir1", "dir2")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "stage=3 stop_stage=5 use_gpu=true exp_name=my exp rest=dir1 dir2"


def test_defaults_without_options(demo):
    assert run(demo).stdout.strip() == "stage=0 stop_stage=10 use_gpu=false exp_name=base rest="


def test_unknown_option_is_an_error(demo):
    r = run(demo, "--stgae", "3")
    assert r.returncode != 0 and "invalid option --stgae" in r.stderr and r.stdout == ""


def test_boolean_options_only_take_true_or_false(demo):
    r = run(demo, "--use_gpu", "yes")
    assert r.returncode != 0 and "takes true or false" in r.stderr
    assert run(demo, "--use_gpu", "false").returncode == 0


def test_missing_value_and_equals_form_are_errors(demo):
    r = run(demo, "--stage")
    assert r.returncode != 0 and "needs a value" in r.stderr
    r = run(demo, "--stage=3")
    assert r.returncode != 0 and "--opt value" in r.stderr


def test_help_prints_usage_and_current_values(demo):
    r = run(demo, "--stage", "4", "--help")
    assert r.returncode == 0
    assert r.stdout.startswith("Usage: demo.sh [options] <dir>")
    lines = {ln.split()[0]: ln.split()[1] for ln in r.stdout.splitlines()[2:] if ln.strip()}
    assert lines["--stage"] == "4" and lines["--use_gpu"] == "false" and lines["--stop_stage"] == "10"
    assert "stage=" not in r.stdout.splitlines()[-1]  # exited before the script body


def test_config_file_is_sourced_and_cli_after_it_wins(demo):
    r = run(demo, "--config", "extra.conf", "--stage", "2")
    assert r.stdout.strip() == "stage=2 stop_stage=10 use_gpu=false exp_name=from_config rest="
    r = run(demo, "--config", "missing.conf")
    assert r.returncode != 0 and "not found" in r.stderr
