#!/usr/bin/env bash
# The paper's Fig. 2 on the mini corpus: five GRPO runs from the same pretrained model (stage 5 with
# conf/mini/grpo_fig2_<run>.yaml -> exp/grpo_mini_fig2_<run>), stage 6 for all, then the figure
# exp/fig2.png and the held-out table exp/fig2.md (python -m flowse.bench.fig2).
# Run from egs/dns2020 once stages 0-4 are done:   local/fig2.sh [--run_args "--ngpu 1"]
# Rerunning skips the finished runs and resumes an interrupted one (as run.sh does).
set -euo pipefail

runs="ovrl_a0.2 ovrl_a0.4 spk multi_batch multi_frozen"
run_args=            # extra run.sh options for every call (e.g. "--ngpu 1 --nj 4")
help_message="Usage: $0 [--runs \"$runs\"] [--run_args \"...\"]"
. utils/parse_options.sh

exps=
for r in $runs; do
  ./run.sh --stage 5 --stop_stage 5 --grpo_config conf/mini/grpo_fig2_$r.yaml $run_args
  exps+=" exp/grpo_mini_fig2_$r"
done
./run.sh --stage 6 --stop_stage 6 $run_args
. ./path.sh
python -m flowse.bench.fig2 --exps $exps --out exp/fig2.png --table exp/fig2.md
