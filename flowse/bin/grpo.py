"""Stage 5 as it was named before DiffusionNFT and DPO joined: ``flowse.bin.posttrain`` (same arguments;
the yaml's ``method`` decides, GRPO when it names none)."""
from __future__ import annotations

from flowse.bin.posttrain import main

if __name__ == "__main__":
    from flowse.utils.cli import run

    run(main)
