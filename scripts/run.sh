#!/usr/bin/env bash
# `make run`: the hands-free voice assistant on the configured model (the embedded one by default).
# With a microphone and a speaker it listens and answers on them until Ctrl-C. A machine without a
# sound card gets one spoken turn instead, from a WAV made with espeak-ng to a WAV, so the whole
# pipeline (voice detection, codecs, engine, streaming decode, session log) still runs.
set -euo pipefail
cd "$(dirname "$0")/.."

if .venv/bin/python - <<'PY' 2>/dev/null
from mio_agent.runtime.audio.devices import find_device
find_device(None, "input")
find_device(None, "output")
PY
then
    exec .venv/bin/mio-agent run "$@"
fi

echo "run: no microphone or speaker on this machine (see .venv/bin/mio-agent devices);"
echo "run: playing one spoken turn from a file instead"
mkdir -p out
espeak-ng -w out/question.wav "Hello! Could you tell me what the weather will be like today?"
.venv/bin/mio-agent run --mic-file out/question.wav --speaker-file out/answer.wav --turns 1 --session-dir out/sessions "$@"
echo "run: the question played: out/question.wav; the reply: out/answer.wav"
