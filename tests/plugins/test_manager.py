"""The plugin manager: built-ins, entry-point plugins, the autoload switch, the disabled list, validation."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from mio_agent import hookimpl
from mio_agent.capability import Capability, PluginError
from mio_agent.config import Config, PluginsConfig
from mio_agent.events import TextIn
from mio_agent.plugin import AUTOLOAD_ENV, DEFAULT_PLUGINS, PluginManager
from tests.plugins._dist import install_dist

HELLO = """
    from mio_agent import hookimpl
    from mio_agent.capability import Capability, Trigger

    CONFIGS = []

    @hookimpl
    def mio_agent_configure(config):
        CONFIGS.append(config)

    @hookimpl
    def mio_agent_capabilities():
        return [
            Capability(
                name="hello",
                description="Say hello.",
                inputs=("text",),
                outputs=("text",),
                mode="std",
                preset="text",
                prompt="Say hello to {text}.",
                trigger=Trigger(keywords=("hello",)),
                prompt_source="project",
            )
        ]
"""

MISSPELLED = """
    from mio_agent import hookimpl

    @hookimpl
    def mio_agent_capabilites():
        return []
"""


@pytest.fixture
def hello_dist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_dist(
        tmp_path / "site",
        monkeypatch,
        dist="mio-hello",
        module="mio_hello_plugin",
        source=HELLO,
        ep_name="hello",
    )


def names(pm: PluginManager) -> list[str]:
    return [p.name for p in pm.plugins()]


def test_builtins_are_registered_in_order() -> None:
    pm = PluginManager(autoload=False)
    pm.load()
    assert names(pm) == [m.rpartition(".")[2] for m in DEFAULT_PLUGINS]
    assert all(p.origin == "builtin" for p in pm.plugins())
    caps = [c.name for c in pm.capabilities()]
    assert {"image_editing", "visual_storytelling", "chain_of_visual_thought", "generate_image"} <= set(caps)
    assert len(caps) == len(set(caps))


def test_entry_point_plugin_is_loaded_with_its_distribution(hello_dist: None) -> None:
    config = Config()
    pm = PluginManager(autoload=True)
    pm.load(config)
    info = {p.name: p.origin for p in pm.plugins()}
    assert info["hello"] == "dist mio-hello 0.1"
    assert pm.capability("hello").prompt == "Say hello to {text}."
    assert pm.capability_plugin("hello") == "hello"
    import mio_hello_plugin  # type: ignore[import-not-found]

    # the historic configure hook reached the third-party plugin
    assert [config] == mio_hello_plugin.CONFIGS


def test_autoload_switch_from_the_environment(hello_dist: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(AUTOLOAD_ENV, "1")
    pm = PluginManager()
    pm.load()
    assert "hello" not in names(pm)
    assert "skills" in names(pm)
    monkeypatch.setenv(AUTOLOAD_ENV, "0")
    pm = PluginManager()
    pm.load()
    assert "hello" in names(pm)


def test_disabled_list_blocks_builtins_and_entry_points(hello_dist: None) -> None:
    config = Config(plugins=PluginsConfig(disabled=("hello", "visual_storytelling")))
    pm = PluginManager.from_config(config, autoload=True)
    assert "hello" not in names(pm)
    assert "visual_storytelling" not in names(pm)
    assert "visual_storytelling" not in [c.name for c in pm.capabilities()]
    with pytest.raises(PluginError, match="no capability 'visual_storytelling'"):
        pm.capability("visual_storytelling")


def test_misspelled_hook_fails_naming_the_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_dist(
        tmp_path / "site",
        monkeypatch,
        dist="mio-typo",
        module="mio_typo_plugin",
        source=MISSPELLED,
        ep_name="typo",
    )
    pm = PluginManager(autoload=True)
    with pytest.raises(PluginError, match=r"plugin 'typo' \(dist mio-typo 0.1\).*mio_agent_capabilites"):
        pm.load()


def test_plugin_that_fails_to_import_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_dist(
        tmp_path / "site",
        monkeypatch,
        dist="mio-broken",
        module="mio_broken_plugin",
        source="raise RuntimeError('boom')\n",
        ep_name="broken",
    )
    with pytest.raises(PluginError, match=r"plugin 'broken'.*RuntimeError: boom"):
        PluginManager(autoload=True).load()


def test_capability_name_clash_names_both_plugins() -> None:
    class Twin:
        @hookimpl
        def mio_agent_capabilities(self) -> list[Capability]:
            return [
                Capability(
                    name="generate_image",
                    description="A second image generator.",
                    inputs=("text",),
                    outputs=("image",),
                    mode="std",
                    preset="image_generation",
                    prompt="{text}",
                )
            ]

    pm = PluginManager(autoload=False)
    pm.load()
    pm.register(Twin(), "twin")
    with pytest.raises(PluginError, match=r"'generate_image'.*'skills'.*'twin'"):
        pm.capabilities()


def test_wrong_hook_signature_is_rejected_at_registration() -> None:
    class Bad:
        @hookimpl
        def mio_agent_event(self, evnt: object) -> None:
            del evnt

    pm = PluginManager(autoload=False)
    pm.load()
    with pytest.raises(PluginError, match="plugin 'bad'"):
        pm.register(Bad(), "bad")


def test_non_capability_results_are_rejected() -> None:
    class Junk:
        @hookimpl
        def mio_agent_capabilities(self) -> list[object]:
            return ["not a capability"]

    pm = PluginManager(builtins=(), autoload=False)
    pm.load()
    pm.register(Junk(), "junk")
    with pytest.raises(PluginError, match=r"plugin 'junk'.*str"):
        pm.capabilities()


async def test_observers_startup_and_shutdown() -> None:
    seen: list[str] = []

    class Observer:
        @hookimpl
        def mio_agent_event(self, event: TextIn) -> None:
            seen.append(event.text)

        @hookimpl
        def mio_agent_startup(self, app: object) -> object:
            async def go() -> None:
                seen.append(f"start {app}")

            return go()

        @hookimpl
        def mio_agent_shutdown(self) -> None:
            seen.append("stop")

    class Failing:
        @hookimpl
        def mio_agent_event(self) -> None:
            raise RuntimeError("observer bug")

        @hookimpl
        def mio_agent_shutdown(self) -> None:
            raise RuntimeError("shutdown bug")

    pm = PluginManager(builtins=(), autoload=False)
    pm.register(Observer(), "observer")
    pm.register(Failing(), "failing")
    pm.load()
    await pm.startup("app")
    pm.emit(TextIn(session="s", turn=1, text="hi"))
    await pm.shutdown("app")
    assert seen == ["start app", "hi", "stop"]


def test_sources_and_sinks_are_collected() -> None:
    @dataclass
    class Factory:
        name: str

    class Io:
        @hookimpl
        def mio_agent_sources(self, config: Config) -> list[Factory]:
            return [Factory(f"mic-{config.log.level}")]

        @hookimpl
        def mio_agent_sinks(self) -> list[Factory]:
            return [Factory("speaker"), Factory("screen")]

    pm = PluginManager(builtins=(), autoload=False)
    pm.register(Io(), "io")
    pm.load()
    assert [f.name for f in pm.sources(Config())] == ["mic-info"]
    assert [f.name for f in pm.sinks(Config())] == ["speaker", "screen"]


def test_invalid_capability_declarations_are_refused() -> None:
    base: dict[str, object] = {
        "name": "ok",
        "description": "One line.",
        "inputs": ("text",),
        "outputs": ("text",),
        "mode": "std",
        "preset": "text",
        "prompt": "{text}",
    }
    Capability(**base)  # type: ignore[arg-type]
    for change, message in (
        ({"name": "Bad Name"}, "lower case"),
        ({"description": "two\nlines"}, "one non-empty line"),
        ({"outputs": ("smell",)}, "unknown modality 'smell'"),
        ({"preset": "fast"}, "unknown generation preset 'fast'"),
        ({"mode": "voice"}, "voice mode replies with speech only"),
    ):
        with pytest.raises(PluginError, match=message):
            Capability(**(base | change))  # type: ignore[arg-type]


def test_builtin_plugins_use_only_the_public_api() -> None:
    folder = Path(__file__).resolve().parents[2] / "plugins"
    for path in folder.glob("*.py"):
        source = path.read_text(encoding="utf-8")
        assert "import pluggy" not in source and "from pluggy" not in source, path.name
        assert "mio_agent._" not in source and "from mio_agent.markers" not in source, path.name
