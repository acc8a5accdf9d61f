#!/usr/bin/env bash
# Regenerates Switchboard's shipped prompts (the WAV files beside this script) from text,
# with espeak-ng (speech) and SoX (8 kHz conversion, trimming, level, the SIT tone).
#
#   sudo apt-get install -y --no-install-recommends espeak-ng sox
#   bash prompts/generate.sh            # rewrites every prompts/**/*.wav
#   bash prompts/generate.sh --check    # regenerates into a temporary directory and
#                                       # says which committed files differ
#
# Only regeneration needs these tools: the WAVs are committed and built into the binary
# (pbx/runtime/src/prompts.rs), so running or testing Switchboard needs neither.
#
# Reproducible: espeak-ng is deterministic for a given version and voice, and SoX runs in
# repeatable mode (-R) without dither (-D). The committed files were made with espeak-ng
# 1.51 (Debian 12) and SoX 14.4.2; another espeak-ng version may pronounce differently.
#
# Output: 8 kHz mono 16-bit PCM (telephone band: what G.711 carries; Opus legs get it
# resampled), leading and trailing silence trimmed, peaks at -3 dBFS, a short pause kept
# after each clip so that prompts played one after another (a slot number read out digit
# by digit) do not run together. A prompt's name is its path here without `.wav`.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="$here"
check=false
if [ "${1:-}" = "--check" ]; then
    check=true
    out="$(mktemp -d)"
elif [ -n "${1:-}" ]; then
    echo "usage: $0 [--check]" >&2
    exit 2
fi

for tool in espeak-ng sox; do
    if ! command -v "$tool" >/dev/null; then
        echo "$tool is missing: apt-get install -y --no-install-recommends espeak-ng sox" >&2
        exit 1
    fi
done

# The voice: American English, a little slower than espeak-ng's default 175 words per
# minute (phone audio is harder to follow than a loudspeaker's).
VOICE=en-us
SPEED=150

tmp="$(mktemp -d)"
cleanup() {
    rm -rf "$tmp"
    if $check; then rm -rf "$out"; fi
}
trap cleanup EXIT

# speak NAME PAUSE_SECONDS TEXT: one prompt, NAME.wav under $out.
speak() {
    local name=$1 pause=$2 text=$3
    mkdir -p "$(dirname "$out/$name.wav")"
    espeak-ng -v "$VOICE" -s "$SPEED" -w "$tmp/raw.wav" "$text"
    # silence ... reverse silence ... reverse: trim both ends (below 0.5% for 20 ms).
    sox -R -D "$tmp/raw.wav" -r 8000 -c 1 -b 16 -e signed-integer "$out/$name.wav" \
        silence 1 0.02 0.5% reverse silence 1 0.02 0.5% reverse \
        norm -3 pad 0 "$pause"
}

# tone FILE HZ SECONDS: a sine at -18 dBFS.
tone() {
    sox -R -D -n -r 8000 -c 1 -b 16 -e signed-integer "$1" synth "$3" sine "$2" gain -18
}

# --- prompts the default dialplan and its menu play -----------------------------------
speak this-call-is-recorded 0.2 "This call is being recorded."
speak closed 0.2 "Our office is closed. Please call again during office hours."
speak closed-holiday 0.2 "Our office is closed for the holiday. Please call again on the next working day."
speak ivr/main-menu 0.2 "For sales, press 1. For support, press 2. For the operator, press 0. Or dial the number of the person you are calling."
speak ivr/invalid 0.2 "That is not a valid choice."

# Refused: the ITU-T E.180 special information tone (950, 1400, 1800 Hz, 330 ms each),
# then the words.
speak not-allowed-words 0.2 "This number cannot be called from this phone."
tone "$tmp/sit1.wav" 950 0.33
tone "$tmp/sit2.wav" 1400 0.33
tone "$tmp/sit3.wav" 1800 0.33
sox -R -D -n -r 8000 -c 1 -b 16 -e signed-integer "$tmp/gap.wav" trim 0 0.3
sox -R -D "$tmp/sit1.wav" "$tmp/sit2.wav" "$tmp/sit3.wav" "$tmp/gap.wav" \
    "$out/not-allowed-words.wav" "$out/not-allowed.wav"
rm "$out/not-allowed-words.wav"

# --- park announcements: "call parked at" "slot" "seven" "zero" "one" -----------------
speak call-parked-at 0.15 "Call parked at"
speak slot 0.15 "slot"

# --- digits, for saying numbers one digit at a time (Asterisk's digits/ names) --------
words=(zero one two three four five six seven eight nine)
for d in 0 1 2 3 4 5 6 7 8 9; do
    speak "digits/$d" 0.08 "${words[$d]}"
done
speak digits/star 0.08 "star"
speak digits/pound 0.08 "pound"

if $check; then
    status=0
    while IFS= read -r -d '' f; do
        rel="${f#"$out"/}"
        if ! cmp -s "$f" "$here/$rel"; then
            echo "differs: $rel"
            status=1
        fi
    done < <(find "$out" -name '*.wav' -print0 | sort -z)
    while IFS= read -r -d '' f; do
        rel="${f#"$here"/}"
        [ -e "$out/$rel" ] || { echo "not generated: $rel"; status=1; }
    done < <(find "$here" -name '*.wav' -print0 | sort -z)
    [ $status = 0 ] && echo "every prompt matches its text"
    exit $status
fi
echo "prompts written to $out"
