"""Everything a user has, for real: ST of one version, our extension installed by our own installer, the
companion service, and NanoGPT (the fake upstream, reached by ST through the test internet).

``real_stack(...)`` builds it; ``RealStack`` gives tests the pieces and the chores a test needs between
pages: seed a user's files from the fixtures real ST wrote (``tests/fixtures/sillytavern/<version>/``),
read what ST saved, wait for a condition on a file.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from nanogpt_companion.sillytavern.dataroot import UserPaths
from tests.fakes.nanogpt_upstream import SUBSCRIBER_KEY
from tests.fakes.service_fixtures import RunningService, UpstreamThread, start_fake_upstream, start_service
from tests.fakes.st_fixtures import STInstall
from tests.fixtures import ST_FIXTURES
from tests.realst.internet import NANOGPT_HOSTS, InterceptingProxy, make_test_ca
from tests.realst.server import RealSillyTavern

REPO = Path(__file__).resolve().parents[2]
DEFAULT_USER = "default-user"
# A user's starting point in most tests: ST's own NanoGPT settings with "Merge consecutive roles", what the
# doctor recommends for the fake's models, so a page starts without findings and a test creates the one it
# is about (with "None", the service would fix the file before the test even opens a page).
CLEAN_OAI: dict[str, Any] = {"custom_prompt_post_processing": "merge"}


def version_fixtures(version: str) -> Path:
    """The files real ST ``version`` wrote (``python -m tests.realst.make_fixtures`` regenerates them)."""
    return ST_FIXTURES / version


def load_version_fixture(version: str, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((version_fixtures(version) / name).read_text(encoding="utf-8"))
    return data


def secrets_for(version: str, key: str) -> dict[str, Any]:
    """``secrets.json`` in the format ``version`` writes, holding ``key`` as the active NanoGPT key: the
    file real ST wrote (fixture), with its fake key swapped for ``key``."""
    data = load_version_fixture(version, "secrets.json")
    entries = data.get("api_key_nanogpt")
    if isinstance(entries, list):
        for entry in entries:
            entry["value"] = key
    else:
        data["api_key_nanogpt"] = key
    return data


@dataclass
class RealStack:
    st: RealSillyTavern
    upstream: UpstreamThread
    internet: InterceptingProxy
    base: Path
    service: RunningService | None = None
    handles: list[str] = field(default_factory=lambda: [DEFAULT_USER])
    _models_handed_out: set[str] = field(default_factory=set)

    @property
    def version(self) -> str:
        return self.st.version

    @property
    def url(self) -> str:
        return self.st.url

    @property
    def fake(self) -> Any:
        return self.upstream.fake

    def user_dir(self, handle: str = DEFAULT_USER) -> Path:
        return self.st.user_dir(handle)

    def settings_path(self, handle: str = DEFAULT_USER) -> Path:
        return self.user_dir(handle) / "settings.json"

    def read_settings(self, handle: str = DEFAULT_USER) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.settings_path(handle).read_text(encoding="utf-8"))
        return data

    def read_secrets(self, handle: str = DEFAULT_USER) -> dict[str, Any]:
        path = self.user_dir(handle) / "secrets.json"
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
        return data

    def write_settings(self, settings: Mapping[str, Any], handle: str = DEFAULT_USER) -> None:
        """Replace settings.json as ST does (whole file, 4-space JSON, temp file + rename); only while no
        tab of this user is open, or the tab's next save overwrites it (as it would in real use)."""
        _atomic_write(self.settings_path(handle), json.dumps(dict(settings), indent=4))

    def write_secrets(self, secrets: Mapping[str, Any], handle: str = DEFAULT_USER) -> None:
        _atomic_write(self.user_dir(handle) / "secrets.json", json.dumps(dict(secrets), indent=4))

    def seed_user(
        self,
        handle: str = DEFAULT_USER,
        *,
        settings: str | Mapping[str, Any] | None = "settings.nanogpt.json",
        key: str | None = SUBSCRIBER_KEY,
        oai: Mapping[str, Any] | None = None,
        **top: Any,
    ) -> dict[str, Any]:
        """A user's settings.json (a fixture of this ST version, optionally with ``oai_settings`` keys and
        top-level keys changed) and secrets.json (that version's format with ``key``; None removes it)."""
        data = (
            load_version_fixture(self.version, settings)
            if isinstance(settings, str)
            else dict(settings or {})
        )
        if oai:
            data.setdefault("oai_settings", {}).update(oai)
        data.update(top)
        self.user_dir(handle).mkdir(parents=True, exist_ok=True)
        if settings is not None:
            self.write_settings(data, handle)
        secrets_path = self.user_dir(handle) / "secrets.json"
        if key is None:
            secrets_path.unlink(missing_ok=True)
        else:
            self.write_secrets(secrets_for(self.version, key), handle)
        # The preset real ST saved as "NanoGPT" (Save preset as), beside ST's own Default.
        presets = self.user_dir(handle) / "OpenAI Settings"
        presets.mkdir(exist_ok=True)
        preset = version_fixtures(self.version) / "preset.NanoGPT.json"
        if not (presets / "NanoGPT.json").exists():
            (presets / "NanoGPT.json").write_bytes(preset.read_bytes())
        return data

    def unused_model(self) -> str:
        """A model of NanoGPT's subscription list that no earlier test of this stack was given.

        Note: a fresh model does not make a fix the user undid automatic again. The doctor keeps the value
        the user kept, across models and sources, until that setting holds another value (issue 10 item 10);
        a test that needs an automatic fix of "None" after another test's undo seeds another value first and
        lets the service read it (see ``choose_another_value_first`` in test_core_journeys.py).
        """
        for model_id in sorted(self.fake.ids("subscription")):
            if ":" not in model_id and model_id not in self._models_handed_out:
                self._models_handed_out.add(model_id)
                return model_id
        raise AssertionError("the fake's subscription list ran out of models for this stack")

    def wait_for_settings(
        self, predicate: Callable[[dict[str, Any]], bool], handle: str = DEFAULT_USER, timeout: float = 20
    ) -> dict[str, Any]:
        """Wait until ST's settings.json satisfies ``predicate`` (ST saves 1 s after a change)."""
        deadline = time.monotonic() + timeout
        last: dict[str, Any] = {}
        while time.monotonic() < deadline:
            try:
                last = self.read_settings(handle)
            except (OSError, ValueError):
                last = {}
            if last and predicate(last):
                return last
            time.sleep(0.05)
        raise AssertionError(
            f"settings.json never satisfied the condition; last oai_settings: "
            f"{ {k: last.get('oai_settings', {}).get(k) for k in _INTERESTING} }"
        )

    def install_extension(
        self, *args: str, env: Mapping[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Our own installer, as a user runs it (``--user H``, ``--global``, ``--server-plugin`` ...)."""
        return run_cli("install-extension", "--sillytavern", str(self.st.folder), *args, env=env)

    def start_service(
        self, *extra_args: str, env: dict[str, str] | None = None, port: int | None = None
    ) -> RunningService:
        """Start our service (again): ``port`` keeps the address a previous run wrote into token files."""
        install = STInstall(
            st_dir=self.st.folder,
            data_root=self.st.data_root,
            users={h: UserPaths(handle=h, root=self.user_dir(h)) for h in self.handles},
        )
        self.service = start_service(
            install,
            self.upstream,
            self.base / "state",
            st_port=self.st.port,
            extra_args=list(extra_args),
            env=env,
            port=port,
        )
        return self.service

    def stop_service(self) -> int:
        """Stop the service; returns its port for a restart at the same address."""
        assert self.service is not None
        self.service.stop()
        return self.service.port

    def stop(self) -> None:
        if self.service is not None:
            self.service.stop()
        self.st.stop()


_INTERESTING = (
    "chat_completion_source",
    "nanogpt_model",
    "custom_url",
    "custom_model",
    "custom_prompt_post_processing",
)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".test-tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def run_cli(
    *args: str, check: bool = True, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``env``: variables added to this process's environment (e.g. ``NANOGPT_COMPANION_PORT``)."""
    result = subprocess.run(
        [sys.executable, "-m", "nanogpt_companion", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        check=False,
        env={**os.environ, **env} if env is not None else None,
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"nanogpt-companion {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


@contextmanager
def fake_internet(upstream: UpstreamThread, folder: Path) -> Iterator[InterceptingProxy]:
    """The intercepting proxy on the fake's own event loop, routing NanoGPT's hosts to the fake."""
    ca = make_test_ca(folder, NANOGPT_HOSTS)
    proxy = InterceptingProxy({host: ("127.0.0.1", upstream.port) for host in NANOGPT_HOSTS}, ca)
    asyncio.run_coroutine_threadsafe(proxy.start(), upstream.loop).result(10)
    try:
        yield proxy
    finally:
        asyncio.run_coroutine_threadsafe(proxy.close(), upstream.loop).result(10)


@contextmanager
def real_stack(
    base: Path,
    version: str,
    *,
    users: Mapping[str, Mapping[str, Any]] | None = None,
    install: Literal["user", "global"] | None = "user",
    install_args: tuple[str, ...] = (),
    config: Mapping[str, Any] | None = None,
    service: bool = True,
    upstream: UpstreamThread | None = None,
    env: Mapping[str, str] | None = None,
) -> Iterator[RealStack]:
    """ST ``version`` with seeded users, the extension installed, ST started, then the service.

    ``users``: handle -> ``seed_user`` options (default: ``default-user`` on NanoGPT with the subscriber
    key). ``install``: our installer per seeded user, globally, or not at all; ``install_args`` are added
    to its command line (``--server-plugin`` ...). ``config``: config.yaml keys.
    ``upstream``: share a running fake (else one is started and stopped here). ``env``: variables for
    our installer and for ST's process (which a service ST's server plugin starts inherits).
    """
    own_upstream = upstream is None
    fake = upstream or start_fake_upstream()
    try:
        with fake_internet(fake, base / "ca") as proxy:
            st = RealSillyTavern.create(
                version, base, proxy_url=proxy.url, ca_pem=proxy.ca.ca_pem, config=dict(config or {})
            )
            stack = RealStack(st=st, upstream=fake, internet=proxy, base=base)
            seeds = users if users is not None else {DEFAULT_USER: {"oai": CLEAN_OAI}}
            stack.handles = list(seeds)
            for handle, options in seeds.items():
                stack.seed_user(handle, **dict(options))
            if install == "global":
                stack.install_extension("--global", *install_args, env=env)
            elif install == "user":
                for handle in seeds:
                    stack.install_extension("--user", handle, *install_args, env=env)
            try:
                st.start(env=dict(env) if env else None)
                if service:
                    stack.start_service()
                yield stack
            finally:
                stack.stop()
    finally:
        if own_upstream:
            fake.stop()
