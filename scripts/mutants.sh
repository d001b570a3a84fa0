#!/usr/bin/env bash
# Mutation testing with mutmut: each module against its own fast test file only.
#
#   scripts/mutants.sh [MODULE[:TEST_FILE]...]
#
# MODULE is a source path as in the repository (mio_agent/history.py, runtime/voice/playback.py);
# its tests default to the mirrored test file (tests/test_history.py,
# tests/runtime/voice/test_playback.py). The default modules are the core ones below. Each module
# runs in its own scratch copy ($MUTANTS_WORK/<module path with "-" for "/">, default
# /tmp/mio-mutants), so nothing is written into the working tree and two modules never share
# results. It prints killed/survived/total and the score per module, and each surviving mutant
# (`cd` into the scratch copy, then `mutmut show NAME` prints its diff).
#
# MUTANTS_JOBS sets mutmut's parallel workers (default: the number of CPUs). MUTANTS_ONLY, a
# mutant-name pattern, runs only the matching mutants, e.g. one function of a large module:
#   MUTANTS_ONLY='mio_agent.engine.xǁConversationEngineǁ_fit*' scripts/mutants.sh mio_agent/engine.py
# Not part of `make test`: it runs the test file once per mutant (minutes per module).
set -euo pipefail

# all of it in a function: bash reads the whole script before running it, so editing the file
# during a long run does not change the run
main() {
    root=$(cd "$(dirname "$0")/.." && pwd)
    bin=$root/.venv/bin
    work=${MUTANTS_WORK:-/tmp/mio-mutants}
    jobs=${MUTANTS_JOBS:-$(nproc)}

    if [ ! -x "$bin/mutmut" ]; then
        echo "mutmut is not installed: $bin/pip install -e '.[dev]'" >&2
        exit 2
    fi

    if [ $# -eq 0 ]; then
        set -- mio_agent/constraints.py mio_agent/history.py mio_agent/parser.py mio_agent/template.py \
            mio_agent/conversation.py
    fi

    summary=()
    for arg in "$@"; do
        module=${arg%%:*}
        name=$(basename "$module" .py)
        # runtime/, plugins/ and tui/ install as mio_agent subpackages (setuptools package-dir); the
        # scratch copy puts them where that mapping does, so the mutated copy imports as installed
        case $module in
            mio_agent/*.py)
                mutated=$module
                tests=tests/${module#mio_agent/}
                ;;
            runtime/*.py | plugins/*.py | tui/*.py)
                mutated=mio_agent/$module
                tests=tests/$module
                ;;
            *)
                echo "$module: not a module of mio_agent/, runtime/, plugins/ or tui/" >&2
                exit 2
                ;;
        esac
        # tests/<dir>/test_<name>.py mirrors <dir>/<name>.py
        tests=$(dirname "$tests")/test_$name.py
        if [ "$arg" != "$module" ]; then
            tests=${arg#*:}
        fi
        for f in "$module" "$tests"; do
            [ -f "$root/$f" ] || { echo "no such file: $f" >&2; exit 2; }
        done

        dir=$work/$(tr / - <<<"${module%.py}")
        rm -rf "$dir"
        mkdir -p "$dir"
        cp -r "$root/mio_agent" "$root/tests" "$dir/"
        for sub in runtime plugins tui; do
            cp -r "$root/$sub" "$dir/mio_agent/$sub"
        done
        find "$dir" -name __pycache__ -prune -exec rm -rf {} +
        # the project's pytest settings, plus mutmut's: the whole package is copied (so `mio_agent`
        # imports from the mutated copy, not from the editable install), only MODULE is mutated, and
        # only TEST_FILE runs against each mutant. Workers fork from a server that has only collected
        # the tests: forked from mutmut's own process (which ran them), they would inherit caches
        # filled by the unmutated code (the constraint's masks) and let mutants of it survive.
        cp "$root/pyproject.toml" "$dir/"
        cat >>"$dir/pyproject.toml" <<EOF

[tool.mutmut]
source_paths = ["mio_agent"]
only_mutate = ["$mutated"]
pytest_add_cli_args_test_selection = ["$tests"]
pytest_add_cli_args = ["-p", "no:cacheprovider"]
process_isolation = "forkserver"
EOF

        echo "== $module ($tests) in $dir"
        only=()
        if [ -n "${MUTANTS_ONLY:-}" ]; then
            only=("$MUTANTS_ONLY")
        fi
        if ! (cd "$dir" && "$bin/mutmut" run --max-children "$jobs" "${only[@]}") >"$dir/mutmut.log" 2>&1; then
            echo "mutmut failed on $module; see $dir/mutmut.log:" >&2
            tail -30 "$dir/mutmut.log" >&2
            exit 1
        fi
        report=$("$bin/python" - "$dir/mutants/$mutated.meta" "$module" <<'EOF'
import json
import sys

# mutmut's exit codes: 1 and 3 a failing test run (killed), 36 and the SIGXCPU family a timeout
# (the mutant made the tests hang: also killed), 33 no test of the file calls the mutated function
KILLED, TIMEOUT, NO_TESTS = {1, 3}, {24, -24, 152, 255, 36}, {5, 33}
# mutants left out by MUTANTS_ONLY have no result (None)
codes = {k: c for k, c in json.load(open(sys.argv[1]))["exit_code_by_key"].items() if c is not None}
timeout = sum(c in TIMEOUT for c in codes.values())
killed = sum(c in KILLED for c in codes.values()) + timeout
survived = sorted((k, c) for k, c in codes.items() if c not in KILLED | TIMEOUT)
total = len(codes)
score = 100.0 * killed / total if total else 100.0
print(
    f"{sys.argv[2]}: killed {killed}/{total} ({timeout} by timeout), survived {len(survived)}"
    f" ({sum(c in NO_TESTS for _, c in survived)} with no test), score {score:.1f}%"
)
for k, c in survived:
    print(f"    {'no tests' if c in NO_TESTS else 'survived'}: {k}")
EOF
        )
        echo "$report"
        summary+=("$(head -1 <<<"$report")")
    done

    echo
    echo "== mutation score (mutmut $("$bin/python" -c 'import importlib.metadata as m; print(m.version("mutmut"))'), $(date -u +%F))"
    printf '%s\n' "${summary[@]}"
}

main "$@"
exit
