"""Worker of the data stages' split jobs: ``python -m flowse.bin.data_job <job_dir> [<job_dir> ...]``.

Started by ``flowse.data.jobdirs.run_splits`` (stages 0-2), one process per job
index; each job dir holds ``job.json`` (what to do) and receives the outputs.
Job dirs that already finished are skipped.
"""
from __future__ import annotations

import argparse

from flowse.data.jobdirs import run_job
from flowse.utils.log import setup_logging


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("job_dirs", nargs="+", help="split job dirs, each containing job.json")
    args = parser.parse_args(argv)
    setup_logging()
    for job_dir in args.job_dirs:
        run_job(job_dir)


if __name__ == "__main__":
    main()
