#!/usr/bin/env bash
# One-time (and idempotent) setup: system packages, a virtual environment in .venv, the project.
set -euo pipefail
cd "$(dirname "$0")/.."

# `setup.sh` installs what the assistant needs; `setup.sh --test` also what the tests need.
# portaudio19-dev: PyAudio builds against it; libspeexdsp1: echo cancellation (loaded with ctypes);
# espeak-ng: the spoken demo turn of `make run` and the tests' spoken fixtures
APT_PACKAGES=(portaudio19-dev libspeexdsp1 espeak-ng)
EXTRAS=""
if [ "${1:-}" = "--test" ]; then
    # mosquitto: the broker the MQTT tests start; chromium: the browser the browser-client test
    # drives (through Playwright, which is told where it is: nothing is downloaded); tmux: the
    # terminal the TUI test starts it in
    APT_PACKAGES+=(mosquitto chromium tmux)
    EXTRAS="[dev]"
fi

need_apt=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    echo "setup: installing system packages: ${need_apt[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv with $PY"
    "$PY" -m venv .venv
    .venv/bin/pip install -q --upgrade pip
fi

# Re-install only when the dependency list (or the extras asked for) changed.
stamp=.venv/.mio-agent-installed
if [ -n "$EXTRAS" ]; then stamp=$stamp-dev; fi
want=$(sha256sum pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "setup: installing Python packages into .venv"
    # torch first: 2.13.0 is a CPU build on this kind of machine's disk; a bare "torch" would pull CUDA wheels
    .venv/bin/pip install -q "torch==2.13.0"
    .venv/bin/pip install -q -e ".$EXTRAS"
    echo "$want" > "$stamp"
fi
