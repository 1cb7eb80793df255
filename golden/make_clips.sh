#!/usr/bin/env bash
# Regenerate the speech clips used by the golden tests, the demo and the benchmark.
#
#   bash golden/make_clips.sh          (run from the repository root)
#
# Needs Debian's espeak-ng 1.51 and sox 14.4.2 with libsox-fmt-all (for mp3/ogg):
#   apt-get install -y espeak-ng sox libsox-fmt-all
#
# espeak-ng always renders 22050 Hz mono PCM16; sox then converts rate, channels, sample
# format and container. `-R` makes sox repeatable (fixed seeds / timestamps) and `-D`
# turns dithering off, so re-running with the same tool versions gives the same files.
# Outputs (all committed):
#   golden/inputs/*                      small clips, one per format/rate case
#   synctalk_audio/data/demo_speech.wav  ~3.5 s 16 kHz mono speech for `make demo`
#   benchmarks/data/speech_45s.flac      exactly 45 s of 16 kHz mono speech
set -euo pipefail

cd "$(dirname "$0")/.."
IN=golden/inputs
mkdir -p "$IN" synctalk_audio/data benchmarks/data
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

SOX="sox -R -D -V1"

# say VOICE SPEED TEXT OUT : espeak-ng -> 22050 Hz mono PCM16, leading/trailing silence cut
# down to 50 ms and peak-normalised to -3 dBFS.
say() {
    local voice=$1 speed=$2 text=$3 out=$4
    espeak-ng -v "$voice" -s "$speed" -w "$TMP/raw.wav" "$text"
    $SOX "$TMP/raw.wav" "$out" \
        silence 1 0.02 0.5% reverse silence 1 0.02 0.5% reverse \
        pad 0.05 0.05 gain -n -3
}

# 1. 16 kHz mono PCM16 (no resampling needed in the pipeline)
say en-us 230 "The quick brown fox jumps." "$TMP/a.wav"
$SOX "$TMP/a.wav" -r 16000 -c 1 -b 16 -e signed-integer "$IN/speech_16k_mono.wav"

# 2. 22050 Hz mono PCM16 (espeak-ng's native rate)
say en-gb 200 "She sells sea shells." "$TMP/b.wav"
$SOX "$TMP/b.wav" -r 22050 -c 1 -b 16 -e signed-integer "$IN/speech_22k_mono.wav"

# 3. 44100 Hz stereo PCM24; right channel = left * 0.7 delayed by 2.5 ms, so the two
#    channels differ and the mono mix-down is exercised.
say en-us+f2 215 "Please call Stella." "$TMP/c.wav"
$SOX "$TMP/c.wav" -r 44100 -c 2 -b 24 -e signed-integer "$IN/speech_44k_stereo_24bit.wav" \
    remix 1 1v0.7 delay 0 0.0025

# 4. 48 kHz mono float32 WAV
say en-gb-x-rp 200 "A rainbow of white light." "$TMP/d.wav"
$SOX "$TMP/d.wav" -r 48000 -c 1 -b 32 -e floating-point "$IN/speech_48k_float.wav"

# 5. FLAC, 32 kHz mono 16-bit (exercises flac decoding and 32k -> 16k resampling)
say en-us+m3 225 "Open the window, please." "$TMP/e.wav"
$SOX "$TMP/e.wav" -r 32000 -c 1 -b 16 "$IN/speech_flac_32k.flac"

# 6. Ogg Vorbis, 24 kHz mono, quality 4
say en-gb-scotland 200 "Meet me at noon today." "$TMP/f.wav"
$SOX "$TMP/f.wav" -r 24000 -c 1 -C 4 "$IN/speech_ogg.ogg"

# 7. MP3 (lame via libsox-fmt-mp3), 44.1 kHz mono, 64 kbit/s CBR
say en-us+f4 215 "How much wood is there?" "$TMP/g.wav"
$SOX "$TMP/g.wav" -r 44100 -c 1 -C 64 "$IN/speech_mp3.mp3"

# 8. exactly 2 s of digital silence, 16 kHz mono PCM16 (32000 zero samples)
$SOX -r 16000 -c 1 -n -r 16000 -c 1 -b 16 -e signed-integer "$IN/silence_2s_16k.wav" trim 0 32000s

# 9./10. very short speech, 16 kHz mono PCM16: 4800 samples (0.3 s) and 2400 samples
#        (0.15 s, below the 3000-sample minimum), cut from voiced speech.
say en-us 175 "Hello there, friend." "$TMP/h.wav"
$SOX "$TMP/h.wav" -r 16000 -c 1 -b 16 -e signed-integer "$TMP/h16.wav"
$SOX "$TMP/h16.wav" "$IN/short_0p3s_16k.wav" trim 800s 4800s
$SOX "$TMP/h16.wav" "$IN/too_short_0p15s_16k.wav" trim 1600s 2400s

# Demo clip for `make demo`: ~3.5 s, 16 kHz mono PCM16.
say en-us 170 "Welcome to the sync talk audio demo. Speech becomes features." "$TMP/demo.wav"
$SOX "$TMP/demo.wav" -r 16000 -c 1 -b 16 -e signed-integer synctalk_audio/data/demo_speech.wav

# Benchmark clip: sentences with 0.3 s pauses, padded/trimmed to exactly 45 s
# (720000 samples), 16 kHz mono 16-bit FLAC.
sentences=(
    "Speech synthesis turns written text into sound that people can understand."
    "The audio front end computes a mel spectrogram from the waveform."
    "Each video frame receives a window of sixteen mel frames."
    "A small convolutional network encodes every window into a feature vector."
    "The features are padded at both ends before the frames are rendered."
    "Benchmarks should use realistic input lengths and stable settings."
    "Forty five seconds of audio is long enough to measure throughput."
    "The quick brown fox jumps over the lazy dog once again."
    "Bright sunlight filled the quiet room on a cold winter morning."
    "Numbers like three hundred and twenty eight appear in the model names."
    "We compare every stage against an independent reference implementation."
    "Thank you for listening to this long and somewhat boring recording."
)
voices=(en-us en-gb en-us+f2 en-gb-x-rp en-us+m3 en-gb-scotland)
parts=()
for i in "${!sentences[@]}"; do
    say "${voices[$((i % ${#voices[@]}))]}" 175 "${sentences[$i]}" "$TMP/s$i.wav"
    $SOX "$TMP/s$i.wav" -r 16000 -c 1 -b 16 -e signed-integer "$TMP/s16_$i.wav" pad 0 0.3
    parts+=("$TMP/s16_$i.wav")
done
$SOX "${parts[@]}" "$TMP/long.wav"
$SOX "$TMP/long.wav" -b 16 benchmarks/data/speech_45s.flac pad 0 45 trim 0 720000s

for f in "$IN"/* synctalk_audio/data/demo_speech.wav benchmarks/data/speech_45s.flac; do
    printf '%-45s %s Hz, %s ch, %s samples\n' "$f" "$(soxi -r "$f")" "$(soxi -c "$f")" "$(soxi -s "$f")"
done
