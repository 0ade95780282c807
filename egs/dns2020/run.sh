#!/usr/bin/env bash
# FlowSE-GRPO recipe: flow-matching speech enhancement + post-training (online GRPO; DiffusionNFT, DPO).
# Default: the embedded mini corpus on CPU, end to end (under 20 minutes on 2 cores, install included).
#   ./run.sh                                                   # stages 0-6 on the mini corpus
#   ./run.sh --corpus dns2020 --dns_root /data/DNS-Challenge --ngpu 4   # the paper setting
#   ./run.sh --stage 5 --stop_stage 6 --posttrain_config conf/mini/grpo_multi.yaml   # a new GRPO exp
#   ./run.sh --stage 5 --stop_stage 6 --posttrain_config conf/mini/nft.yaml          # DiffusionNFT (dpo.yaml: DPO)
set -euo pipefail
. ./path.sh
. ./cmd.sh

stage=0
stop_stage=6
nj=2                 # parallel data jobs (stages 0-2, 6)
ngpu=0               # GPUs per node for training (0: CPU)
nproc=2              # training processes per node on the CPU (ngpu 0), through torchrun (gloo):
                     # on 2 cores two 1-thread processes train 1.5x faster than one 2-thread one
nnodes=1             # multi-node training through torchrun
node_rank=0
master_addr=localhost
master_port=29500
corpus=mini          # mini | dns2020
dns_root=            # DNS-Challenge checkout (interspeech2020/master) for --corpus dns2020
conf_dir=            # default: conf/mini for the mini corpus, conf/paper for dns2020
force=false          # redo stages even when done with the same config and inputs
corpus_config=;   corpus_args=
simulate_config=; simulate_args=
mel_config=;      mel_args=
vocoder_config=;  vocoder_args=
pretrain_config=; pretrain_args=
posttrain_config=; posttrain_args=   # stage 5; the yaml's `method:` (grpo | nft | dpo) names the exp dir
grpo_config=;     grpo_args=        # the same as posttrain_config / posttrain_args (their older names)
score_config=;    score_args=
test_sets=       # default: the test sets stages 0-1 made (data/test_sets, written by stage 1)

help_message="Usage: $0 [options]   (stages: 0 corpus, 1 simulate, 2 mel, 3 vocoder, 4 pretrain, 5 post-training, 6 enhance+score)"
. utils/parse_options.sh

log() { echo -e "$(date '+%Y-%m-%d %H:%M:%S') (run.sh:${BASH_LINENO[0]}:${FUNCNAME[1]}) $*" >&2; }
# Exp tag: config dir + yaml basename + sanitized extra args, so a changed yaml or args is a new
# exp dir: conf/mini/grpo.yaml -> mini, conf/mini/grpo_multi.yaml -> mini_multi, plus "--train.max_steps 40"
# -> mini_train.max_steps_40.  Usage: tag_of STEP YAML ARGS
tag_of() {
  local t d; d=$(basename "$(dirname "$2")"); t=$(basename "$2" .yaml)
  if [ "$t" = "$1" ]; then t=$d; elif [ "${t#"$1"_}" != "$t" ]; then t=${d}_${t#"$1"_}; fi
  [ -z "$3" ] || t+="_$(echo "$3" | sed 's/--//g; s/[^A-Za-z0-9.=-]\{1,\}/_/g; s/^_//; s/_$//')"
  echo "$t"
}
launch() {  # python -m MODULE ARGS..., through torchrun when several processes train
  local procs=$ngpu device=cuda
  [ "$ngpu" -gt 0 ] || { procs=$nproc; device=cpu; }
  if [ "$nnodes" -eq 1 ] && [ "$procs" -gt 1 ]; then  # one node: a free local port
    torchrun --standalone --nproc_per_node "$procs" -m "$@" --device $device
  elif [ "$nnodes" -gt 1 ]; then
    torchrun --nnodes "$nnodes" --node_rank "$node_rank" --nproc_per_node "$procs" \
      --master_addr "$master_addr" --master_port "$master_port" -m "$@" --device $device
  else
    python -m "$@" --device $device
  fi
}

[ -n "$conf_dir" ] || conf_dir=conf/$([ "$corpus" = mini ] && echo mini || echo paper)
corpus_config=${corpus_config:-$conf_dir/corpus.yaml}
simulate_config=${simulate_config:-$conf_dir/simulate.yaml}
mel_config=${mel_config:-$conf_dir/mel.yaml}
vocoder_config=${vocoder_config:-$conf_dir/vocoder.yaml}
pretrain_config=${pretrain_config:-$conf_dir/pretrain.yaml}
posttrain_config=${posttrain_config:-${grpo_config:-$conf_dir/grpo.yaml}}
posttrain_args=${posttrain_args:-$grpo_args}
method=$(sed -n 's/^method: *\([a-z]*\).*/\1/p' "$posttrain_config" 2>/dev/null | head -1)
method=${method:-grpo}
score_config=${score_config:-$conf_dir/score.yaml}
vocoder_exp=exp/vocoder_$(tag_of vocoder "$vocoder_config" "$vocoder_args")
pretrain_exp=exp/pretrain_$(tag_of pretrain "$pretrain_config" "$pretrain_args")
post_exp=exp/${method}_$(tag_of $method "$posttrain_config" "$posttrain_args")
timings=()
timed() { local name=$1 s=$SECONDS; shift; "$@"; timings+=("$name:$((SECONDS - s))s"); }

if [ $stage -le 0 ] && [ $stop_stage -ge 0 ]; then
  log "stage 0: corpus preparation ($corpus)"
  timed stage0 python -m flowse.bin.prepare_corpus --corpus $corpus --config $corpus_config --dns_root "$dns_root" \
    --out_dir data/local --nj $nj --force $force $corpus_args
fi

if [ $stage -le 1 ] && [ $stop_stage -ge 1 ]; then
  log "stage 1: simulation (noise + reverberation mixing)"
  timed stage1 python -m flowse.bin.simulate --config $simulate_config --local_dir data/local --data_dir data \
    --nj $nj --cmd "$data_cmd" --force $force $simulate_args
fi

if [ -z "$test_sets" ] && [ $stop_stage -ge 2 ]; then
  test_sets=$(cat data/test_sets 2>/dev/null | xargs) || true
  [ -n "$test_sets" ] || { log "no test sets in data/test_sets: run stage 1 (it skips finished sets) or give --test_sets"; exit 1; }
fi

if [ $stage -le 2 ] && [ $stop_stage -ge 2 ]; then
  log "stage 2: log-mel dumping"
  timed stage2 python -m flowse.bin.dump_mel --config $mel_config --data_dir data --dump_dir dump \
    --sets "train valid $test_sets" --nj $nj --cmd "$data_cmd" --force $force $mel_args
fi

if [ $stage -le 3 ] && [ $stop_stage -ge 3 ]; then
  log "stage 3: vocoder -> $vocoder_exp (and the vocoder ceiling on the test sets)"
  timed stage3 launch flowse.bin.train_vocoder --config $vocoder_config --data_dir data --dump_dir dump \
    --exp_dir $vocoder_exp --sets "$test_sets" --force $force $vocoder_args
fi

if [ $stage -le 4 ] && [ $stop_stage -ge 4 ]; then
  log "stage 4: flow-matching pretraining -> $pretrain_exp"
  timed stage4 launch flowse.bin.pretrain --config $pretrain_config --dump_dir dump --exp_dir $pretrain_exp \
    --vocoder_dir $vocoder_exp --force $force $pretrain_args
fi

if [ $stage -le 5 ] && [ $stop_stage -ge 5 ]; then
  log "stage 5: $method post-training (LoRA) -> $post_exp"
  timed stage5 launch flowse.bin.posttrain --config $posttrain_config --init_dir $pretrain_exp --data_dir data \
    --dump_dir dump --exp_dir $post_exp --force $force $posttrain_args
fi

if [ $stage -le 6 ] && [ $stop_stage -ge 6 ]; then
  log "stage 6: enhancement and scoring of $test_sets"
  systems="exp/noisy_input $vocoder_exp $pretrain_exp"; [ ! -d $post_exp ] || systems+=" $post_exp"
  # --exp_root: every other exp dir holding a model.pt is scored too (other post-training exps)
  timed stage6 python -m flowse.bin.evaluate --systems "$systems" --exp_root exp --data_dir data --sets "$test_sets" \
    --config $score_config --nj $nj --cmd "$data_cmd" --force $force $score_args
  # the table of every system, and the paired effect (mean +- SE over test utterances) of each training stage:
  # pretraining vs the noisy input, every post-training exp of this base vs the base
  pairs="$pretrain_exp:exp/noisy_input"
  for d in exp/grpo_* exp/nft_* exp/dpo_*; do
    grep -qs "\"init_dir\": \"$pretrain_exp\"" $d/summary.json && pairs+=" $d:$pretrain_exp"
  done
  python utils/collect_results.py exp --out RESULTS.md --paired "$pairs"
fi

log "done in ${SECONDS}s; time per stage: ${timings[*]:-none}"
