"""The hello capability, tested the way a plugin author tests: mio_agent.testing, no hardware, no weights."""

from __future__ import annotations

from mio_agent_hello.plugin import HELLO

from mio_agent.testing import CapabilityHarness


async def test_hello_greets_in_text_and_speech() -> None:
    sink = await CapabilityHarness(max_new_tokens=400).run(HELLO, text="Ada")
    assert sink.text == "Hello, Ada!"
    assert not sink.errors
    assert sink.modalities == {"text", "speech"}  # the declared outputs
    assert [p.step for p in sink.progress] == [0, 1, 2]
