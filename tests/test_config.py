"""Config: default.yaml equals the defaults; file, environment and overrides; errors name the key."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from mio_agent import config as config_module
from mio_agent.config import Config, EngineConfig, SessionConfig, load_config
from mio_agent.exceptions import ConfigError

DEFAULT_YAML = Path(__file__).resolve().parents[1] / "configs" / "default.yaml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def error_of(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), env={})
    return str(info.value)


def test_all_is_complete() -> None:
    for name in config_module.__all__:
        assert hasattr(config_module, name), name


def test_default_yaml_equals_the_builtin_defaults() -> None:
    assert load_config(DEFAULT_YAML, env={}) == Config()


def test_default_yaml_spells_out_every_key() -> None:
    raw = yaml.safe_load(DEFAULT_YAML.read_text(encoding="utf-8"))
    assert raw == Config().to_dict()


def test_no_file_no_env_gives_the_defaults() -> None:
    cfg = load_config(env={})
    assert cfg == Config()
    assert cfg.model.path is None and cfg.engine.mode == "voice" and cfg.engine.max_context == 4096
    assert cfg.engine.max_new_tokens == 2048 and cfg.codecs.diffusion_steps == 20
    assert cfg.plugins.disabled == () and cfg.log.level == "info"


def test_config_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Config().engine.mode = "std"  # type: ignore[misc]


def test_a_file_sets_some_keys_and_the_rest_keep_defaults(tmp_path: Path) -> None:
    cfg = load_config(
        write(
            tmp_path,
            "model:\n  path: ~/models/MIO-7B-Instruct\n  device: cuda:1\n  dtype: bfloat16\n"
            "engine:\n  mode: std\n  temperature: 0.7\n  top_k: 40\n"
            "plugins:\n  disabled: [storytelling, vcot]\n"
            "session:\n",
        ),
        env={},
    )
    assert cfg.model.path == "~/models/MIO-7B-Instruct" and cfg.model.device == "cuda:1"
    assert cfg.model.dtype == "bfloat16" and cfg.model.embedded_seed == 0
    assert cfg.engine.mode == "std" and cfg.engine.temperature == 0.7 and cfg.engine.top_k == 40
    assert cfg.engine.max_new_tokens == 2048
    assert cfg.plugins.disabled == ("storytelling", "vcot")
    assert cfg.session == SessionConfig()


def test_integers_are_accepted_for_numbers_and_become_floats(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "engine:\n  temperature: 1\n  top_p: 1e-1\n"), env={})
    assert cfg.engine.temperature == 1.0 and isinstance(cfg.engine.temperature, float)
    assert cfg.engine.top_p == pytest.approx(0.1)  # YAML 1.1 reads 1e-1 as a string


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "# nothing here\n"), env={}) == Config()


def test_to_dict_round_trips_through_yaml(tmp_path: Path) -> None:
    cfg = load_config(env={}, overrides={"plugins.disabled": ["a"], "engine.seed": 7, "log.level": "debug"})
    path = write(tmp_path, yaml.safe_dump(cfg.to_dict()))
    assert load_config(path, env={}) == cfg


def test_environment_overrides(tmp_path: Path) -> None:
    path = write(tmp_path, "engine:\n  max_new_tokens: 100\n  mode: std\nmodel:\n  path: /models/mio\n")
    env = {
        "MIO_AGENT__ENGINE__MAX_NEW_TOKENS": "512",
        "MIO_AGENT__MODEL__PATH": "null",
        "MIO_AGENT__PLUGINS__DISABLED": "[storytelling, edit]",
        "MIO_AGENT__LOG__LEVEL": "WARNING",
        "MIO_AGENT__codecs__device": "cpu",
        "MIO_AGENT_HOME": "/elsewhere",  # one underscore: not a config key
        "PATH": "/usr/bin",
    }
    cfg = load_config(path, env=env)
    assert cfg.engine.max_new_tokens == 512
    assert cfg.engine.mode == "std"  # from the file, untouched
    assert cfg.model.path is None
    assert cfg.plugins.disabled == ("storytelling", "edit")
    assert cfg.log.level == "warning"
    assert cfg.codecs.device == "cpu"


def test_os_environ_is_the_default_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIO_AGENT__ENGINE__SEED", "42")
    assert load_config().engine.seed == 42


def test_overrides_beat_environment_beat_file(tmp_path: Path) -> None:
    path = write(tmp_path, "engine:\n  seed: 1\n  top_k: 1\n  top_p: 0.5\n")
    env = {"MIO_AGENT__ENGINE__SEED": "2", "MIO_AGENT__ENGINE__TOP_K": "2"}
    cfg = load_config(path, env=env, overrides={"engine.seed": 3, "model": {"embedded_seed": 9}})
    assert (cfg.engine.seed, cfg.engine.top_k, cfg.engine.top_p) == (3, 2, 0.5)
    assert cfg.model.embedded_seed == 9


def test_unknown_key_names_it_suggests_and_lists_valid_keys(tmp_path: Path) -> None:
    message = error_of(tmp_path, "engine:\n  max_new_tokns: 10\n")
    assert "engine.max_new_tokns: unknown key (did you mean max_new_tokens?)" in message
    for key in dataclasses.fields(EngineConfig):
        assert key.name in message
    assert str(tmp_path / "agent.yaml") in message


def test_unknown_section_is_an_error(tmp_path: Path) -> None:
    message = error_of(tmp_path, "modle:\n  path: x\n")
    assert "modle: unknown section (did you mean model?)" in message
    assert "model, codecs, engine, session, plugins, log" in message


def test_unknown_key_from_the_environment_names_the_variable() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(env={"MIO_AGENT__ENGINE__TEMPRATURE": "0.5"})
    message = str(info.value)
    assert "engine.temprature: unknown key (did you mean temperature?)" in message
    assert "from MIO_AGENT__ENGINE__TEMPRATURE" in message


@pytest.mark.parametrize(
    "var", ["MIO_AGENT__ENGINE", "MIO_AGENT__ENGINE__MODE__X", "MIO_AGENT____MODE", "MIO_AGENT__"]
)
def test_malformed_environment_names(var: str) -> None:
    with pytest.raises(ConfigError, match=rf"{var}: expected MIO_AGENT__<SECTION>__<KEY>"):
        load_config(env={var: "std"})


def test_environment_value_that_is_not_yaml() -> None:
    with pytest.raises(
        ConfigError, match=r"plugins\.disabled: not a YAML value.*MIO_AGENT__PLUGINS__DISABLED"
    ):
        load_config(env={"MIO_AGENT__PLUGINS__DISABLED": "[a, b"})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("engine:\n  max_new_tokens: -3\n", "engine.max_new_tokens: expected a positive integer, got -3"),
        ("engine:\n  max_context: 4.5\n", "engine.max_context: expected a positive integer, got 4.5"),
        ("engine:\n  max_context: '4096'\n", "engine.max_context: expected a positive integer, got '4096'"),
        ("engine:\n  mode: voic\n", 'engine.mode: expected "voice" or "std", got \'voic\''),
        ("engine:\n  seed: true\n", "engine.seed: expected a non-negative integer or null, got true"),
        ("engine:\n  top_p: 0\n", "engine.top_p: expected a number in (0, 1] or null, got 0"),
        ("engine:\n  temperature: -0.1\n", "engine.temperature: expected a non-negative number or null"),
        ("engine:\n  preset: ''\n", "engine.preset: expected a preset name"),
        ("model:\n  device: gpu\n", 'model.device: expected "auto", "cpu", "cuda", "cuda:N" or "mps"'),
        ("model:\n  device: cuda:x\n", "model.device: expected"),
        ("model:\n  dtype: fp16\n", 'model.dtype: expected "auto", "float32", "float16" or "bfloat16"'),
        ("model:\n  path: 12\n", "model.path: expected a path (string) or null"),
        ("codecs:\n  diffusion_steps: 0\n", "codecs.diffusion_steps: expected a positive integer, got 0"),
        ("plugins:\n  disabled: storytelling\n", "plugins.disabled: expected a list of plugin names"),
        ("plugins:\n  disabled: [a, 3]\n", "plugins.disabled: expected a list of plugin names"),
        ("log:\n  level: loud\n", 'log.level: expected "debug", "info"'),
        ("engine: 3\n", "engine: expected a mapping of keys, got 3"),
    ],
)
def test_wrong_values_name_the_dotted_key(tmp_path: Path, text: str, expected: str) -> None:
    message = error_of(tmp_path, text)
    assert expected in message
    assert f"(in {tmp_path / 'agent.yaml'})" in message


def test_every_error_is_reported_at_once(tmp_path: Path) -> None:
    message = error_of(tmp_path, "engine:\n  max_new_tokens: -3\n  mode: x\nmodel:\n  dtype: half\n")
    assert "engine.max_new_tokens" in message and "engine.mode" in message and "model.dtype" in message


def test_max_new_tokens_must_leave_room_in_the_context(tmp_path: Path) -> None:
    message = error_of(tmp_path, "engine:\n  max_context: 1024\n")
    assert "engine.max_new_tokens: must be less than engine.max_context (1024)" in message
    cfg = load_config(write(tmp_path, "engine:\n  max_context: 1024\n  max_new_tokens: 512\n"), env={})
    assert (cfg.engine.max_context, cfg.engine.max_new_tokens) == (1024, 512)


def test_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    message = error_of(tmp_path, "engine:\n  mode: voice\n  max_context: [1, 2\n")
    assert f"{tmp_path / 'agent.yaml'}:" in message and "YAML syntax error" in message
    line = int(message.split(f"{tmp_path / 'agent.yaml'}:")[1].split(":")[0])
    assert line >= 3


def test_tab_indentation_is_a_syntax_error_with_its_line(tmp_path: Path) -> None:
    message = error_of(tmp_path, "engine:\n\tmode: voice\n")
    assert f"{tmp_path / 'agent.yaml'}:2:" in message


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=r"config file not found: .*nope\.yaml"):
        load_config(missing, env={})


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    message = error_of(tmp_path, "- model\n- engine\n")
    assert "expected a mapping of sections" in message and "got list" in message


def test_overrides_need_section_dot_key() -> None:
    with pytest.raises(ConfigError, match=r"mode: name overrides as section\.key"):
        load_config(env={}, overrides={"mode": "std"})
    with pytest.raises(ConfigError, match=r"engine\.mood: unknown key"):
        load_config(env={}, overrides={"engine.mood": "std"})


def test_session_dir(tmp_path: Path) -> None:
    default = SessionConfig().resolved_dir()
    assert default.parts[-1] == "sessions" and "mio-agent" in str(default)
    assert SessionConfig(dir="~/sessions").resolved_dir() == Path.home() / "sessions"
    assert SessionConfig(dir=str(tmp_path)).resolved_dir() == tmp_path
