#!/usr/bin/env bash
# Post-training methods compared at equal compute on the mini corpus (GRPO, DiffusionNFT, DPO from the same base and
# reward): stage 5 with conf/mini/<method>_equal<reward>.yaml -> exp/<method>_mini_equal<reward>, stage 6 for all,
# then per reward the figure exp/compare<reward>.png (held-out and rollout metrics against training CPU-minutes)
# and the table exp/compare<reward>.md (paired held-out changes, gain per CPU-minute; python -m flowse.bench.fig2).
# Run from egs/dns2020 once stages 0-4 are done:   local/compare_methods.sh [--rewards "'' _multi"]
# Rerunning skips the finished runs and resumes an interrupted one (as run.sh does).
set -euo pipefail

methods="grpo nft dpo"
rewards="''"         # '' = OVRL alone (conf/mini/*_equal.yaml); _multi = 0.6 OVRL + SPK (*_equal_multi.yaml)
run_args=            # extra run.sh options for every call (e.g. "--ngpu 1 --nj 4")
help_message="Usage: $0 [--methods \"$methods\"] [--rewards \"'' _multi\"] [--run_args \"...\"]"
. utils/parse_options.sh

for r in $rewards; do
  r=${r//\'/}
  exps=
  for m in $methods; do
    ./run.sh --stage 5 --stop_stage 5 --posttrain_config conf/mini/${m}_equal$r.yaml $run_args
    exps+=" exp/${m}_mini_equal$r"
  done
  ./run.sh --stage 6 --stop_stage 6 $run_args
  (. ./path.sh && python -m flowse.bench.fig2 --exps $exps --x cpu_minutes --out exp/compare$r.png \
    --table exp/compare$r.md)
done
