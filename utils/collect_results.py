#!/usr/bin/env python3
"""Collect every <exp_root>/*/results.json into one markdown table (rows system x set) and print it.

    python utils/collect_results.py exp [--out RESULTS.md]
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from flowse.metrics.results import main_collect  # noqa: E402

if __name__ == "__main__":
    sys.exit(main_collect())
