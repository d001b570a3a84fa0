"""Routing a turn: `/name` commands, trigger words from text or a transcript, and a replacement router."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from mio_agent import hookimpl
from mio_agent.capability import Capability, PluginError, RouteContext, RouteDecision
from mio_agent.conversation import ImagePart, TextPart, Turn
from mio_agent.plugin import PluginManager
from mio_agent.router import match_command

IMAGE = ImagePart(tuple(range(32)))


@pytest.fixture(scope="module")
def pm() -> PluginManager:
    manager = PluginManager(autoload=False)
    manager.load()
    return manager


def text_turn(text: str, *extra: ImagePart) -> Turn:
    return Turn("user", (TextPart(text), *extra))


def test_match_command() -> None:
    assert match_command("/generate-image a red fox") == ("generate_image", "a red fox")
    assert match_command("  /speak") == ("speak", "")
    assert match_command("no command /speak") is None


def test_explicit_command_picks_the_capability(pm: PluginManager) -> None:
    d = pm.route(text_turn("/visual_storytelling a dragon who bakes bread"))
    assert d == RouteDecision(
        "visual_storytelling", "explicit command /visual_storytelling", "a dragon who bakes bread"
    )
    # an explicit-only capability is reachable by its command
    d = pm.route(text_turn("/speech_to_speech"))
    assert d is not None and d.capability == "speech_to_speech"


def test_unknown_command_is_plain_conversation(pm: PluginManager) -> None:
    assert pm.route(text_turn("/nosuchthing hello there")) is None


def test_keyword_routes_only_with_the_needed_input(pm: PluginManager) -> None:
    # without any image at hand, "make this photo look like winter" is plain conversation
    assert pm.route(text_turn("make this photo look like winter")) is None
    d = pm.route(text_turn("make this photo look like winter", IMAGE))
    assert d is not None and d.capability == "image_editing" and "matched" in d.reason
    d = pm.route(text_turn("make this photo look like winter"), RouteContext(recent_image=True))
    assert d is not None and d.capability == "image_editing"


def test_transcript_of_speech_is_matched(pm: PluginManager) -> None:
    turn = Turn("user", (TextPart(""),))
    ctx = RouteContext(mode="voice", transcript="Please draw a lighthouse at night")
    d = pm.route(turn, ctx)
    assert d is not None and d.capability == "generate_image"


def test_plain_text_is_not_routed(pm: PluginManager) -> None:
    assert pm.route(text_turn("how are you today?")) is None


def test_a_plugin_router_replaces_the_default() -> None:
    class AlwaysSpeak:
        @hookimpl
        def mio_agent_route(
            self, turn: Turn, capabilities: Sequence[Capability], context: RouteContext
        ) -> RouteDecision | None:
            del turn, context
            assert any(c.name == "speak" for c in capabilities)
            return RouteDecision("speak", "this router always speaks")

    manager = PluginManager(autoload=False)
    manager.load()
    manager.register(AlwaysSpeak(), "always_speak")
    d = manager.route(text_turn("/generate_image a cat"))
    assert d is not None and d.capability == "speak"


def test_a_router_naming_an_unknown_capability_fails() -> None:
    class Wrong:
        @hookimpl
        def mio_agent_route(self) -> RouteDecision:
            return RouteDecision("nope", "bug")

    manager = PluginManager(autoload=False)
    manager.load()
    manager.register(Wrong(), "wrong")
    with pytest.raises(PluginError, match="no capability 'nope'"):
        manager.route(text_turn("hi"))
