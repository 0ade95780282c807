#!/usr/bin/env bash
# The test command: installs tools/venv when needed, then runs pytest.
#   test/run.sh            all tests (incl. the tiny end-to-end recipe test)
#   test/run.sh -m "not slow"   the quick ones; extra arguments go to pytest
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$root/tools/install.sh"
. "$root/tools/venv/bin/activate"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE} LC_ALL=C PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
cd "$root"
exec python -m pytest test "$@"
