"""`mio-agent plugins`: built-ins listed with their capabilities; autoload switch honoured."""

from __future__ import annotations

import json
import os

from tests.cli.conftest import run_cli


def test_lists_builtins_and_every_capability() -> None:
    proc = run_cli("plugins", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    names = [p["name"] for p in data["plugins"]]
    assert names[:2] == ["router", "skills"] and "image_editing" in names
    caps = {c["name"]: c for c in data["capabilities"]}
    assert caps["transcribe"]["inputs"] == ["speech"] and caps["transcribe"]["outputs"] == ["text"]
    assert caps["image_editing"]["plugin"] == "image_editing"
    assert {"visual_storytelling", "chain_of_visual_thought", "speak", "generate_image"} <= set(caps)
    # how each is triggered, in full: what a plugin author needs to predict routing
    editing = caps["image_editing"]
    assert editing["needs"] == ["image"] and editing["explicit_only"] is False
    assert isinstance(editing["patterns"], list) and editing["keywords"]


def test_disabled_plugin_from_the_environment() -> None:
    env_name = "MIO_AGENT__PLUGINS__DISABLED"
    os.environ[env_name] = "[visual_storytelling]"
    try:
        proc = run_cli("plugins", "--json")
    finally:
        del os.environ[env_name]
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert "visual_storytelling" not in [p["name"] for p in data["plugins"]]
    assert "visual_storytelling" not in [c["name"] for c in data["capabilities"]]
