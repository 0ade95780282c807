#!/usr/bin/env bash
# Benchmark of the data stages on the mini corpus: stage 0 once, then stage 1 (simulation) and
# stage 2 (log-mel dumping) with --nj 1 and --nj N, in a scratch copy of the recipe.
#   utils/bench_simulate.sh [--nj 2] [--conf_dir conf/mini] [--work_dir /tmp/flowse_bench]
# Prints the wall time and throughput (utterances/s, audio-hours/hour) of each run.
set -euo pipefail
nj=2
conf_dir=conf/mini
work_dir=/tmp/flowse_bench
help_message="Usage: utils/bench_simulate.sh [--nj 2] [--conf_dir conf/mini] [--work_dir DIR]"
. "$(dirname "$0")/parse_options.sh"

root=$(cd "$(dirname "$0")/.." && pwd)
[ -x "$root/tools/venv/bin/python" ] || "$root/tools/install.sh"
. "$root/tools/venv/bin/activate"
export PYTHONPATH=$root${PYTHONPATH:+:$PYTHONPATH} OMP_NUM_THREADS=1 LC_ALL=C
rm -rf "$work_dir"; mkdir -p "$work_dir"
cp -r "$root/egs/dns2020/conf" "$work_dir/"
cd "$work_dir"

t0=$SECONDS
python -m flowse.bin.prepare_corpus --corpus mini --config $conf_dir/corpus.yaml --out_dir data/local --nj $nj 2> stage0.log
echo "stage 0 (nj=$nj): $((SECONDS - t0)) s; $(grep -o 'done: .*' stage0.log)"
for n in 1 $nj; do
  python -m flowse.bin.simulate --config $conf_dir/simulate.yaml --local_dir data/local --data_dir data_nj$n \
    --nj $n --force true 2> stage1_nj$n.log
  echo "stage 1 (nj=$n): $(grep -o 'stage 1 done: .*' stage1_nj$n.log)"
done
sets=$(python -c "import yaml; print(' '.join(yaml.safe_load(open('$conf_dir/simulate.yaml'))['sets']))")
for n in 1 $nj; do
  python -m flowse.bin.dump_mel --config $conf_dir/mel.yaml --data_dir data_nj$nj --dump_dir dump_nj$n --sets "$sets" \
    --nj $n --force true 2> stage2_nj$n.log
  echo "stage 2 (nj=$n): $(grep -o 'stage 2 done: .*' stage2_nj$n.log)"
done
cmp -s data_nj1/train/utt2info data_nj$nj/train/utt2info && echo "utt2info identical for nj=1 and nj=$nj"
