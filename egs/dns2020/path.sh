# Sourced by run.sh: activates tools/venv, installing it first when missing or stale.
FLOWSE_ROOT=${FLOWSE_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
"$FLOWSE_ROOT/tools/install.sh" || { echo "path.sh: installation failed" >&2; return 1 2>/dev/null || exit 1; }
. "$FLOWSE_ROOT/tools/venv/bin/activate"
export PATH=$FLOWSE_ROOT/utils:$PATH
export LC_ALL=C
export PYTHONIOENCODING=UTF-8
export PYTHONUNBUFFERED=1
# One thread per process by default: data jobs run --nj processes side by side; training
# and GRPO raise torch's intra-op threads themselves (--threads).
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
export MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}
# Without it, OpenMP threads spin on shared cores: 2 threads ran ~10x slower than 1 here.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
export TOKENIZERS_PARALLELISM=false
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
