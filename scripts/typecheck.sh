#!/usr/bin/env bash
# mypy over the package as installed: runtime/, plugins/ and tui/ linked in as mio_agent.runtime etc.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
tree=build/typecheck
rm -rf "$tree" && mkdir -p "$tree/mio_agent"
for entry in mio_agent/*; do
    ln -s "$root/$entry" "$tree/mio_agent/$(basename "$entry")"
done
for sub in runtime plugins tui; do
    ln -s "$root/$sub" "$tree/mio_agent/$sub"
done
cd "$tree"
exec "$root/.venv/bin/mypy" --config-file "$root/pyproject.toml" -p mio_agent "$@"
