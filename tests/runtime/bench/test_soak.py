"""A very short `bench soak` (real server, real broker when mosquitto is installed, three clients
doing every kind of turn): the invariants that hold whatever the timing. No wall-clock assertions."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from mio_agent.runtime.bench.soak import KINDS, bench_soak

PROTOCOL_DOC = Path(__file__).resolve().parents[3] / "docs" / "protocol.md"


def documented_codes() -> tuple[set[str], set[str]]:
    """The error codes of docs/protocol.md's Errors table: exact ones, and prefixes of `x.*` ones."""
    text = PROTOCOL_DOC.read_text()
    table = text[text.index("## Errors") :]
    table = table[: table.index("\n## ", 1)]
    exact: set[str] = set()
    prefixes: set[str] = set()
    for line in table.splitlines():
        if not line.startswith("| `"):
            continue
        first_cell = line.split("|")[1]
        for code in re.findall(r"`([a-z_.*]+)`", first_cell):
            if code.endswith(".*"):
                prefixes.add(code[:-1])
            else:
                exact.add(code)
    return exact, prefixes


@pytest.mark.timeout(900)
async def test_a_short_soak_keeps_every_invariant() -> None:
    f: dict[str, Any] = await bench_soak(minutes=0.2, sessions=3, seed=0)
    assert f["client_failures"] == []
    # every message the server numbered arrived exactly once, across every resume
    assert f["resumes"] > 0
    assert f["events_lost"] == 0 and f["events_duplicated"] == 0
    assert f["replay_gap_lost"] == 0 and f["seq_out_of_order"] == 0
    assert f["tracebacks"] == 0, f["traceback_samples"]
    # once every client left and its session was reaped: no thread or task more than before the first
    assert f["sessions_reaped"] and f["teardown_errors"] == []
    assert f["threads_after"] <= f["threads_idle"] and f["tasks_after"] <= f["tasks_idle"]
    assert f["back_to_idle"]
    # every client does a whole round of every kind: each kind was tried, and came out as it should
    for kind in KINDS:
        assert f["kinds"][kind]["attempted"] > 0, kind
        assert f["kinds"][kind]["completed"] > 0, (kind, f["kinds"][kind])
    assert f["turns_completed"] > 0
    # the misbehaving capabilities end in their own errors; nothing undocumented reaches a client
    assert f["errors_by_code"].get("capability.error", 0) > 0
    assert f["errors_by_code"].get("capability.timeout", 0) > 0
    exact, prefixes = documented_codes()
    for code in f["errors_by_code"]:
        assert code in exact or code.startswith(tuple(prefixes)), f"{code} is not in docs/protocol.md"
    if f["mqtt"] == "mosquitto":
        assert f["mqtt_lost"] == 0
        assert f["mqtt_delivered"] > 0 and f["mqtt_broker_restarts"] == 1
        assert f["mqtt_bridge_connections"] >= 2  # it came back after the restart
    else:
        assert f["mqtt"].startswith("skipped")


def test_the_documented_codes_are_read() -> None:
    exact, prefixes = documented_codes()
    assert {"protocol.json", "replay.gap", "limit.server", "audio.rate"} <= exact
    assert {"input.", "capability.", "reply."} <= prefixes
