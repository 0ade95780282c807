"""The package's shape: layer rules, no import cycles, small modules.

The same checks from the command line: ``python utils/check_imports.py`` (prints the
import graph's violations and cycles, exits non-zero on any).
"""
from __future__ import annotations

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "utils"))

import check_imports  # noqa: E402


def test_import_graph_is_found():
    graph = check_imports.import_graph(os.path.join(ROOT, "flowse"))
    assert "flowse.models.io" in graph and "flowse.models.flowse_model" in graph["flowse.models.io"]


def test_layer_rules_hold():
    graph = check_imports.import_graph(os.path.join(ROOT, "flowse"))
    assert check_imports.layer_violations(graph) == []


def test_layer_rule_catches_a_violation():
    graph = {"flowse.models.x": {"flowse.data.y"}, "flowse.data.y": set(), "flowse.rl.z": {"flowse.bin.grpo"}}
    found = check_imports.layer_violations(graph)
    assert ("flowse.models.x", "flowse.data.y") in found and ("flowse.rl.z", "flowse.bin.grpo") in found


def test_no_import_cycles():
    graph = check_imports.import_graph(os.path.join(ROOT, "flowse"))
    assert check_imports.cycles(graph) == []


def test_cycle_detection():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert check_imports.cycles(graph) == [["a", "b", "c"]]


def test_modules_are_small():
    assert check_imports.long_modules(os.path.join(ROOT, "flowse"), check_imports.MAX_LINES) == []
