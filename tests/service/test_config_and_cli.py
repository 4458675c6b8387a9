"""Configuration precedence and the CLI's serve lifecycle, as users meet them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from nanogpt_companion.config import Settings, load_settings
from tests.fakes.service_fixtures import build_stack_install, free_port, start_fake_upstream, start_service
from tests.fakes.st_fixtures import STInstall


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("NANOGPT"):
            monkeypatch.delenv(name)


def test_defaults_are_safe() -> None:
    settings = Settings()
    assert settings.host == "127.0.0.1"
    assert settings.port == 8719
    assert settings.upstream == "https://nano-gpt.com/api"
    assert settings.api_key is None


def test_flags_beat_env_beat_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "companion.toml"
    config.write_text(
        'port = 9001\nlow_balance_usd = 5.0\nupstream = "http://file.invalid/api/"\nlog_level = "DEBUG"\n'
    )
    monkeypatch.setenv("NANOGPT_COMPANION_PORT", "9002")
    monkeypatch.setenv("NANOGPT_COMPANION_UPSTREAM", "http://env.invalid/api")
    settings = load_settings(config, upstream="http://flag.invalid/api", port=None)
    assert settings.upstream == "http://flag.invalid/api"  # flag
    assert settings.port == 9002  # env over file
    assert settings.low_balance_usd == 5.0  # file over default
    assert settings.log_level == "DEBUG"


def test_env_lists_key_and_policies(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NANOGPT_COMPANION_ALLOW_ORIGINS", "http://a.test:8000, http://b.test:8000")
    monkeypatch.setenv("NANOGPT_API_KEY", "sk-nano-FAKE-123")
    monkeypatch.setenv("NANOGPT_COMPANION_DOCTOR_POLICIES", '{"context": "auto"}')
    settings = Settings()
    assert settings.allow_origins == ["http://a.test:8000", "http://b.test:8000"]
    assert settings.api_key is not None and settings.api_key.get_secret_value() == "sk-nano-FAKE-123"
    assert "sk-nano-FAKE-123" not in repr(settings)
    assert settings.doctor_policies == {"context": "auto"}


def test_environment_names_match_in_any_case_and_bad_json_is_clear(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("nanogpt_companion_watch", "false")
    monkeypatch.setenv("NANOGPT_COMPANION_API_KEY", "sk-nano-FAKE-second")
    monkeypatch.setenv("NANOGPT_API_KEY", "sk-nano-FAKE-first")  # the documented name wins
    settings = Settings(port=9100)
    assert settings.watch is False and settings.port == 9100
    assert settings.api_key is not None and settings.api_key.get_secret_value() == "sk-nano-FAKE-first"
    assert settings.model_fields_set >= {"watch", "api_key", "port"}
    monkeypatch.setenv("NANOGPT_COMPANION_DOCTOR_POLICIES", "context=auto")
    with pytest.raises(ValidationError, match="DOCTOR_POLICIES is not JSON"):
        Settings()
    monkeypatch.delenv("NANOGPT_COMPANION_DOCTOR_POLICIES")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    if sys.platform.startswith("linux"):
        assert Settings().state_dir == tmp_path / "xdg" / "nanogpt-companion"


def test_unknown_file_keys_and_bad_values_are_clear_errors(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("prot = 1\n")
    with pytest.raises(ValueError, match=r"unknown keys.*prot"):
        load_settings(config)
    result = subprocess.run(
        [sys.executable, "-m", "nanogpt_companion", "serve", "--port", "99999"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "port" in result.stderr and "Traceback" not in result.stderr
    missing = subprocess.run(
        [sys.executable, "-m", "nanogpt_companion", "serve", "--sillytavern", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert missing.returncode == 2
    assert "not found" in missing.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_serve_starts_and_stops_cleanly(tmp_path: Path, sig: signal.Signals) -> None:
    st_port = free_port()
    st: STInstall = build_stack_install(tmp_path, st_port)
    upstream = start_fake_upstream(n_models=50)
    try:
        service = start_service(st, upstream, tmp_path / "state", st_port=st_port)
        status, body = service.request("GET", "/api/catalog")
        assert status == 200 and body["count"] == 50
        token = json.loads(service.token_file("alice").read_text())
        assert token["url"] == service.url and len(token["token"]) >= 40
        assert oct(service.token_file("alice").stat().st_mode & 0o777) == "0o600"
        service.process.send_signal(sig)
        assert service.process.wait(15) == 0
        log = service.log_text()
        assert "stopped" in log
        assert "Traceback" not in log
        # Tokens are stable across restarts, so an open tab keeps working after the service restarts.
        again = start_service(st, upstream, tmp_path / "state", st_port=st_port)
        assert json.loads(again.token_file("alice").read_text())["token"] == token["token"]
        again.stop()
    finally:
        upstream.stop()


def test_catalog_command_prints_the_catalogue(tmp_path: Path) -> None:
    upstream = start_fake_upstream(n_models=40)
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("NANOGPT")}
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "nanogpt_companion",
                "catalog",
                "--upstream",
                upstream.base_url,
                "--state-dir",
                str(tmp_path),
                "--tier",
                "paid",
                "--sort",
                "price",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
            env=env,
        ).stdout
        assert out.strip().endswith("of 40 models")
        assert len(out.strip().splitlines()) == len(upstream.fake.ids("paid")) + 1
        as_json = subprocess.run(
            [
                sys.executable,
                "-m",
                "nanogpt_companion",
                "catalog",
                "--upstream",
                upstream.base_url,
                "--state-dir",
                str(tmp_path),
                "--json",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
            env=env,
        ).stdout
        assert len(json.loads(as_json)["models"]) == 40
    finally:
        upstream.stop()
