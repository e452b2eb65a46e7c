"""Config parsing, theme files and the command line's up-front errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from core.chat.endpoint_spec import EndpointSpec
from core.errors import PanechatError
from tui.config import ConfigError, load_config, save_theme_choice
from tui.themes import ThemeError, load_theme, load_themes


@pytest.fixture(autouse=True)
def isolated_xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "extra.toml"
    path.write_text(text)
    return path


def test_defaults_open_three_personas() -> None:
    config = load_config()
    assert [p.name for p in config.panes] == ["Concise", "Teacher", "Poet"]
    assert len({p.sampling.temperature for p in config.panes}) == 3
    assert config.model_path is None and config.context.kv_unified


def test_user_file_overrides_defaults(tmp_path: Path) -> None:
    user = tmp_path / "xdg" / "panechat" / "config.toml"
    user.parent.mkdir(parents=True)
    user.write_text('theme = "textual-light"\n[context]\nn_ctx = 4096\n')
    config = load_config()
    assert config.theme == "textual-light"
    assert config.context.n_ctx == 4096 and config.context.n_batch == 512
    assert user in config.sources


def test_extra_config_replaces_panes(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, '[[panes]]\nname = "Solo"\ntemperature = 0\n'))
    assert [p.name for p in config.panes] == ["Solo"]
    assert config.panes[0].sampling.greedy
    assert config.panes[0].max_tokens == 200  # from [pane_defaults]


def test_unknown_key_names_key_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "[context]\nn_ctx = 2048\nn_bach = 64\n")
    with pytest.raises(ConfigError, match=r"line 3: unknown key 'n_bach' in \[context\]"):
        load_config(path)


def test_bad_value_names_key_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, '[[panes]]\nname = "A"\n\n[[panes]]\nname = "B"\ntemperature = -1\n')
    with pytest.raises(ConfigError, match=r"line 6: temperature: temperature must be >= 0"):
        load_config(path)
    path = write(tmp_path, "[context]\nn_batch = 2\nn_seq_max = 8\n")
    with pytest.raises(ConfigError, match=r"line 2: n_batch: n_batch \(2\) must be at least"):
        load_config(path)


def test_keys_rebind_binding_ids_and_an_unknown_id_is_one_line(tmp_path: Path) -> None:
    """An id that binds nothing was ignored without a word (config.toml's own example,
    ``stop = "ctrl+c"``, was one); an unquoted dotted id is read as the id it spells."""
    quoted = load_config(write(tmp_path, '[keys]\n"pane.stop" = "ctrl+x"\n'))
    dotted = load_config(write(tmp_path, '[keys]\npane.stop = "ctrl+x"\n'))
    assert quoted.keys == dotted.keys == {"pane.stop": "ctrl+x"}
    with pytest.raises(ConfigError, match=r"stop: is no binding id .*\"pane.stop\"") as info:
        load_config(write(tmp_path, '[keys]\nstop = "ctrl+c"\n'))
    assert "\n" not in str(info.value)


def test_invalid_toml_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="invalid TOML") as info:
        load_config(write(tmp_path, "theme = \n"))
    assert "\n" not in str(info.value)


def test_missing_extra_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.toml")


def test_theme_choice_persists_and_keeps_the_rest(tmp_path: Path) -> None:
    user = tmp_path / "config.toml"
    user.write_text('# mine\ntheme = "a"\n\n[context]\nn_ctx = 4096\n')
    save_theme_choice("panechat-paper", user)
    assert user.read_text() == '# mine\ntheme = "panechat-paper"\n\n[context]\nn_ctx = 4096\n'
    fresh = tmp_path / "new" / "config.toml"
    save_theme_choice("x", fresh)
    assert fresh.read_text() == 'theme = "x"\n'


def test_shipped_themes_load_and_bad_ones_fail(tmp_path: Path) -> None:
    names = {t.name for t in load_themes()}
    assert {"panechat-dusk", "panechat-paper"} <= names
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "bad"\n')
    with pytest.raises(ThemeError, match="no 'primary'"):
        load_theme(bad)


def run_cli(*args: str, env_home: Path) -> subprocess.CompletedProcess[str]:
    import os

    env = {**os.environ, "XDG_CONFIG_HOME": str(env_home)}
    return subprocess.run(
        [sys.executable, "-m", "tui", *args], capture_output=True, text=True, timeout=60, env=env
    )


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--model", "/no/such.gguf"], "model file not found: /no/such.gguf"),
        (["--theme", "nope"], "unknown theme 'nope'"),
        (["--panes", "99"], "--panes must be between 1 and 8"),
    ],
)
def test_cli_errors_are_one_line_and_exit_2(tmp_path: Path, args: list[str], expected: str) -> None:
    done = run_cli(*args, env_home=tmp_path)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and expected in done.stderr
    assert "Traceback" not in done.stderr


def test_cli_bad_config_exits_2(tmp_path: Path) -> None:
    bad = write(tmp_path, "[model]\npaht = 'x'\n")
    done = run_cli("--config", str(bad), env_home=tmp_path)
    assert done.returncode == 2 and "line 2: unknown key 'paht'" in done.stderr


def test_cli_version_and_help(tmp_path: Path) -> None:
    assert run_cli("--version", env_home=tmp_path).stdout.startswith("panechat ")
    help_text = run_cli("--help", env_home=tmp_path).stdout
    for flag in ("--model", "--panes", "--config", "--theme", "--version"):
        assert flag in help_text


def test_sessions_can_be_listed_renamed_and_deleted(capsys: pytest.CaptureFixture[str]) -> None:
    from tui.cli import _session_id, main
    from tui.session_store import SessionStore, default_store_path

    store = SessionStore(default_store_path())
    session_id = store.create_session("first chat")
    pane_id = store.add_pane(session_id, load_config().panes[0])
    store.add_message(pane_id, "user", "hello", None)
    store.create_session("empty, never resumed")
    assert _session_id("latest", store) == session_id  # what --resume opens
    assert store.load(session_id)[0].messages == [("user", "hello")]
    store.close()
    assert main(["--sessions"]) == 0
    assert "first chat" in capsys.readouterr().out
    assert main(["--rename-session", str(session_id), "renamed"]) == 0
    assert main(["--sessions"]) == 0
    assert "renamed" in capsys.readouterr().out
    assert main(["--delete-session", str(session_id)]) == 0
    assert main(["--delete-session", str(session_id)]) == 2
    assert "panechat --sessions" in capsys.readouterr().err
    assert main(["--resume"]) == 2  # nothing to resume: one line, exit 2
    assert "no saved session" in capsys.readouterr().err


def test_decode_nice_is_read_and_checked(tmp_path: Path) -> None:
    assert load_config().decode_nice == 10
    assert load_config(write(tmp_path, "[ui]\ndecode_nice = 0\n")).decode_nice == 0
    with pytest.raises(ConfigError, match=r"line 2: decode_nice: must be an integer from 0"):
        load_config(write(tmp_path, "[ui]\ndecode_nice = 25\n"))


def test_update_interval_is_read_and_checked(tmp_path: Path) -> None:
    assert load_config().update_interval == 0.25
    assert load_config(write(tmp_path, "[ui]\nupdate_interval = 1\n")).update_interval == 1.0
    for bad in ("0", "5.0", '"fast"', "true"):
        with pytest.raises(ConfigError, match=r"line 2: update_interval: must be a number of sec"):
            load_config(write(tmp_path, f"[ui]\nupdate_interval = {bad}\n"))


def test_weight_layout_is_read_and_checked(tmp_path: Path) -> None:
    from core import WeightLayout

    assert load_config().weight_layout is WeightLayout.AUTO
    config = load_config(write(tmp_path, '[model]\nweight_layout = "repack"\n'))
    assert config.weight_layout is WeightLayout.REPACK
    for bad in ('"fast"', "1", '"AUTO"'):
        with pytest.raises(ConfigError, match=r"line 2: weight_layout: must be one of 'auto'"):
            load_config(write(tmp_path, f"[model]\nweight_layout = {bad}\n"))


def test_a_named_model_may_be_served_by_an_endpoint(tmp_path: Path) -> None:
    config = load_config(
        write(
            tmp_path,
            '[models.shared]\nendpoint = "http://10.0.0.2:8080/v1/"\n'
            'endpoint_model = "qwen"\napi_key_env = "SHARED_KEY"\n',
        )
    )
    endpoint = config.models["shared"].endpoint
    assert endpoint is not None and (endpoint.base, endpoint.model) == (
        "http://10.0.0.2:8080/v1",
        "qwen",
    )
    assert endpoint.api_key_env == "SHARED_KEY" and config.models["shared"].path is None
    plain = load_config(write(tmp_path, '[models.here]\nendpoint = "http://h/v1"\n'))
    assert plain.models["here"].endpoint == EndpointSpec("http://h/v1", "here")


@pytest.mark.parametrize(
    ("table", "says"),
    [
        ('endpoint = "ftp://h/v1"', "endpoint: endpoint 'ftp://h/v1' must start with http://"),
        ('endpoint = "http://h/v1"\npath = "x.gguf"', "path: does not apply to a model served by"),
        ('endpoint = "http://h/v1"\nn_ctx = 512', "n_ctx: does not apply to a model served by"),
        ('endpoint_model = "qwen"', "endpoint_model: needs an endpoint"),
        ("endpoint = 3", "endpoint: must be a string"),
    ],
)
def test_a_bad_endpoint_is_refused_with_its_line(tmp_path: Path, table: str, says: str) -> None:
    with pytest.raises(ConfigError, match=r"line \d+: ") as refused:
        load_config(write(tmp_path, f"[models.shared]\n{table}\n"))
    assert says in str(refused.value)


def test_an_endpoints_key_comes_from_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = EndpointSpec("http://h/v1", "m", "PANECHAT_TEST_KEY")
    monkeypatch.delenv("PANECHAT_TEST_KEY", raising=False)
    with pytest.raises(PanechatError, match=r"\$PANECHAT_TEST_KEY, which is not set"):
        spec.headers()
    monkeypatch.setenv("PANECHAT_TEST_KEY", "k")
    assert spec.headers()["Authorization"] == "Bearer k"
