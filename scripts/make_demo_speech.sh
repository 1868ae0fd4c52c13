#!/usr/bin/env bash
# Regenerates soulx_live/assets/demo_speech.wav: the project's own built-in demo speech.
#
# Made with espeak-ng (formant synthesis, no third-party recording) and sox:
#   voice   en-us (espeak-ng 1.51, Debian package espeak-ng), speed 170 words/min, pitch 55, amplitude 100, peak-normalised to -1 dBFS
#   layout  sentence part A, then 1.5 s of digital silence (the avatar's mouth must close), then part B
#   output  16 kHz mono signed 16-bit PCM WAV (sox high-quality resampler from espeak-ng's 22050 Hz, no
#           dither, so pauses are exact digital silence and the file is byte-for-byte reproducible)
#
# Needs: apt-get install -y espeak-ng sox
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=soulx_live/assets/demo_speech.wav
VOICE=en-us
SPEED_WPM=170
PITCH=55
AMPLITUDE=100
PAUSE_S=1.5
PART_A="Hello! I am the soul X live avatar. I turn your voice into a talking face."
PART_B="When nobody speaks, I blink and breathe. Give me your photo, and I will speak with your face."

for tool in espeak-ng sox; do
  command -v "$tool" >/dev/null || { echo "error: $tool not found; install it with: apt-get install -y espeak-ng sox" >&2; exit 1; }
done

# No dither (-D) and repeatable mode (-R) for every sox call: same bytes on every run.
export SOX_OPTS="-D -R"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
espeak-ng -v "$VOICE" -s "$SPEED_WPM" -p "$PITCH" -a "$AMPLITUDE" -w "$tmp/a.wav" "$PART_A"
espeak-ng -v "$VOICE" -s "$SPEED_WPM" -p "$PITCH" -a "$AMPLITUDE" -w "$tmp/b.wav" "$PART_B"
# Trim espeak-ng's own leading/trailing quiet so the pause is exactly PAUSE_S of digital silence,
# then keep 0.3 s of silence at both ends of the file.
for p in a b; do
  sox "$tmp/$p.wav" "$tmp/${p}_t.wav" silence 1 0.01 0.2% reverse silence 1 0.01 0.2% reverse
done
sox -n -r 22050 -c 1 -b 16 "$tmp/pause.wav" trim 0 "$PAUSE_S"
sox -n -r 22050 -c 1 -b 16 "$tmp/edge.wav" trim 0 0.3
sox "$tmp/edge.wav" "$tmp/a_t.wav" "$tmp/pause.wav" "$tmp/b_t.wav" "$tmp/edge.wav" \
    -r 16000 -c 1 -b 16 -e signed-integer "$OUT" rate -h norm -1
soxi "$OUT"
