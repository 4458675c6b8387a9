"""The server plugin in real SillyTavern 1.13.5, 1.18.0 and 1.19.0 (issue 9 item 7, issue 12 item 4, issue 13
items 3 and 4, issue 14 item 1).

Installed by our installer, loaded by ST's own plugin loader (``enableServerPlugins: true``), reached
through ST's real session, CSRF protection, IP whitelist and (multi-user) login, with the same HTTP calls the
extension makes. Two ST instances per version:

* single-user (ST's default): ST itself starts the service through the plugin (the command line the installer
  recorded; the service's options come from ST's environment, as a user could set them), and stopping ST
  stops it;
* multi-user (``enableUserAccounts: true``, users created through ST's admin API): the service started
  beforehand, one user's data never reachable with another's session.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import http.client
import json
import os
import re
import signal
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from nanogpt_companion.plugin_link import link_path, read_link, write_link
from tests.fakes.nanogpt_upstream import PAYG_KEY
from tests.fakes.service_fixtures import GUARD, start_fake_upstream, wait_for
from tests.realst.server import STClient
from tests.realst.stack import DEFAULT_USER, RealStack, real_stack
from tests.realst.versions import ST_VERSIONS

from .support import (
    CATALOG_BODY,
    CATALOG_ETAG,
    CATALOG_GZIP,
    REAIM_ATTEMPTS,
    Impostor,
    free_port,
    pid_alive,
    proving_health,
    started_pid,
    validated_route,
)

PLUGIN = "/api/plugins/nanogpt-companion"
ALICE_PASSWORD = "alice-has-a-password"


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def call(
    client: STClient,
    method: str,
    path: str,
    body: Any = None,
    *,
    headers: dict[str, str] | None = None,
    csrf: bool = True,
) -> Answer:
    """One request through ST with the client's session, returning status, headers and the raw bytes."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(client.base_url + path, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if csrf and method not in ("GET", "HEAD"):
        req.add_header("X-CSRF-Token", client.csrf_token())
    for key, value in (headers or {}).items():
        req.add_header(key, value)
    try:
        with client.opener.open(req, timeout=30) as resp:
            return Answer(resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read())
    except urllib.error.HTTPError as exc:
        return Answer(exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read())


def direct(port: int, token: str, path: str) -> Any:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def hello_through_st(client: STClient) -> dict[str, Any]:
    """What the extension does for live events: a ticket (POST, with ST's CSRF token), then the stream."""
    ticket = call(client, "POST", f"{PLUGIN}/api/events/ticket", {})
    assert ticket.status == 200, ticket.body
    req = urllib.request.Request(
        f"{client.base_url}{PLUGIN}/api/events?ticket={ticket.json()['ticket']}&client=probe",
        headers={"Accept": "text/event-stream", "Accept-Encoding": "gzip, deflate, br"},
    )
    # A compression layer that buffered the stream would hold `hello` back: the read would time out.
    with client.opener.open(req, timeout=GUARD) as resp:
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        assert "Content-Encoding" not in resp.headers
        event = None
        while True:
            raw = resp.readline()
            assert raw, "the stream ended before its hello event"
            line = raw.decode().rstrip("\r\n")
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and event == "hello":
                return dict(json.loads(line.split(":", 1)[1]))


@dataclass
class PluginST:
    stack: RealStack
    port: int  # the service's
    handles: list[str] = field(default_factory=lambda: [DEFAULT_USER])

    @property
    def st(self) -> Any:
        return self.stack.st

    def token(self, handle: str = DEFAULT_USER) -> str:
        path = self.stack.user_dir(handle) / "user" / "files" / "nanogpt-companion.json"
        return str(json.loads(path.read_text())["token"])

    def client(self, handle: str | None = None, password: str = "") -> STClient:
        client = self.st.client()
        if handle is not None:
            client.login(handle, password)
        return client

    def run_on_fake_loop(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.stack.upstream.loop).result(30)


# ----------------------------------------------------------------------------------------- set-ups


@pytest.fixture(scope="module", params=ST_VERSIONS)
def single(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PluginST]:
    """ST's default single-user mode, the service started by ST through the plugin.

    The installer records its real start command; the service's port, state dir and upstream come from
    ST's environment (``NANOGPT_COMPANION_*``), which the plugin passes on, as a user could set them."""
    version = str(request.param)
    base = tmp_path_factory.mktemp(f"plugin-single-{version}")
    port = free_port()
    env = {
        "NANOGPT_COMPANION_PORT": str(port),
        "NANOGPT_COMPANION_STATE_DIR": str(base / "state"),
        "NANOGPT_COMPANION_LOG_LEVEL": "DEBUG",
    }
    with contextlib.ExitStack() as exits:
        upstream = start_fake_upstream()
        exits.callback(upstream.stop)
        env["NANOGPT_COMPANION_UPSTREAM"] = upstream.base_url
        stack = exits.enter_context(
            real_stack(
                base,
                version,
                install_args=("--server-plugin", "--enable-server-plugins"),
                config={"hostWhitelist.hosts": ["st.example.com"]},
                service=False,
                upstream=upstream,
                env=env,
            )
        )
        yield PluginST(stack, port)


@pytest.fixture(scope="module", params=ST_VERSIONS)
def multi(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PluginST]:
    """``enableUserAccounts: true``; alice created by the admin through ST's API, with her own key."""
    version = str(request.param)
    with real_stack(
        tmp_path_factory.mktemp(f"plugin-multi-{version}"),
        version,
        install_args=("--server-plugin", "--enable-server-plugins", "--no-autostart"),
        config={"enableUserAccounts": True},
        service=False,
    ) as stack:
        admin = stack.st.client()
        admin.login(DEFAULT_USER)  # ST's default user is an admin without a password
        admin.create_user("alice", password=ALICE_PASSWORD)
        stack.seed_user("alice", key=PAYG_KEY)
        stack.install_extension("--user", "alice")
        stack.handles = [DEFAULT_USER, "alice"]
        service = stack.start_service()
        yield PluginST(stack, service.port, [DEFAULT_USER, "alice"])


# ------------------------------------------------------------------------------ single-user, autostart


def test_st_start_brought_the_service_up(single: PluginST) -> None:
    """Starting ST (nothing else) started the service, with the command the installer recorded."""
    wait_for(lambda: "is up at" in single.st.log_text(), "the plugin's report that the service is up")
    log = single.st.log_text()
    assert re.search(r"started the NanoGPT Companion service \(pid \d+\)", log)
    link = read_link(link_path(single.st.folder))
    assert link is not None and link.autostart is not None
    assert link.url == f"http://127.0.0.1:{single.port}"
    assert link.autostart.command[-3:] == ["serve", "--sillytavern", str(single.st.folder)]
    service_log = Path(link.autostart.log).read_text()
    assert "started by SillyTavern's server plugin" in service_log
    assert "NanoGPT Companion" in service_log  # the service's own log lines land in the named file


def test_balance_catalogue_events_and_writes_through_st(single: PluginST) -> None:
    wait_for(lambda: "is up at" in single.st.log_text(), "the service")
    client = single.client()
    health = call(client, "GET", f"{PLUGIN}/health")
    assert health.status == 200 and health.json()["service"] == "nanogpt-companion"
    token = wait_for(lambda: _token_or_none(single), "the token file")
    account = call(client, "GET", f"{PLUGIN}/api/account")
    assert account.status == 200
    assert account.json()["balance"] == direct(single.port, token, "/api/account")["balance"]
    catalog = call(client, "GET", f"{PLUGIN}/api/catalog?sort=price")
    assert catalog.status == 200
    assert catalog.json()["count"] == direct(single.port, token, "/api/catalog")["count"] > 0
    assert hello_through_st(client)["user"] == DEFAULT_USER
    # ST's CSRF protection stands in front of the plugin: a write without the token never reaches it.
    refused = call(client, "POST", f"{PLUGIN}/api/doctor/fix", {"all": True}, csrf=False)
    assert refused.status == 403
    assert b'"error"' not in refused.body  # ST's answer, not ours
    fixed = call(client, "POST", f"{PLUGIN}/api/doctor/fix", {"all": True})
    assert fixed.status == 200 and "results" in fixed.json()


def test_uploaded_token_file_cannot_reaim_the_plugin(single: PluginST) -> None:
    wait_for(lambda: "is up at" in single.st.log_text(), "the service")
    client = single.client()
    token_path = single.stack.user_dir() / "user" / "files" / "nanogpt-companion.json"
    original = token_path.read_bytes()
    impostor = Impostor()
    single.run_on_fake_loop(impostor.start())
    results: dict[str, int] = {}
    try:
        for template in REAIM_ATTEMPTS:
            forged = {**json.loads(original), "url": template.format(port=impostor.port)}
            upload = call(
                client,
                "POST",
                "/api/files/upload",
                {
                    "name": "nanogpt-companion.json",
                    "data": base64.b64encode(json.dumps(forged).encode()).decode(),
                },
            )
            assert upload.status == 200, upload.body  # ST accepts the upload: the file is the user's
            assert json.loads(token_path.read_text())["url"] == forged["url"]
            answer = call(client, "GET", f"{PLUGIN}/api/account")
            results[template] = answer.status
            assert answer.status == 200 and "balance" in answer.json()  # the linked service answered
        # The link file beside the plugin is out of reach of the same API (no path in a file name).
        escape = call(
            client,
            "POST",
            "/api/files/upload",
            {"name": "../../../SillyTavern/plugins/nanogpt-companion.service.json", "data": "e30="},
        )
        assert escape.status == 400
    finally:
        single.run_on_fake_loop(impostor.stop())
        call(
            client,
            "POST",
            "/api/files/upload",
            {"name": "nanogpt-companion.json", "data": base64.b64encode(original).decode()},
        )
    assert "127.0.0.1" in impostor.addresses
    assert impostor.connections == [], impostor.connections
    assert results == dict.fromkeys(REAIM_ATTEMPTS, 200)
    assert read_link(link_path(single.st.folder)) is not None


def test_rebinding_host_is_refused_and_st_config_hosts_allowed(single: PluginST) -> None:
    """ST's default has the host whitelist off, so ST serves any Host; the plugin does not. The names in
    ST's own ``hostWhitelist.hosts`` (read from its config.yaml with ST's YAML parser) are allowed."""
    wait_for(lambda: "is up at" in single.st.log_text(), "the service")
    client = single.client()
    st_port = single.st.port
    rebound = call(
        client, "GET", f"{PLUGIN}/api/account", headers={"Host": f"rebind.attacker.example:{st_port}"}
    )
    assert rebound.status == 421
    assert rebound.json()["error"]["code"] == "bad_host"
    # ST itself served the same Host (its whitelist is off): the refusal is the plugin's.
    assert (
        call(client, "GET", "/version", headers={"Host": f"rebind.attacker.example:{st_port}"}).status == 200
    )
    for host in (f"st.example.com:{st_port}", f"localhost:{st_port}", f"127.0.0.1:{st_port}"):
        assert call(client, "GET", f"{PLUGIN}/api/account", headers={"Host": host}).status == 200, host
    assert "cannot load SillyTavern's YAML parser" not in single.st.log_text()


def test_st_ip_whitelist_stands_in_front_of_the_plugin(single: PluginST) -> None:
    """A client from an address outside ST's whitelist (ST's default lists 127.0.0.1 and ::1 only; 127.0.0.2
    is another address on this machine's loopback) is refused by ST before the plugin runs."""
    wait_for(lambda: "is up at" in single.st.log_text(), "the service")
    conn = http.client.HTTPConnection(
        "127.0.0.1", single.st.port, timeout=30, source_address=("127.0.0.2", 0)
    )
    try:
        conn.request("GET", f"{PLUGIN}/api/account")
        resp = conn.getresponse()
        body = resp.read()
    finally:
        conn.close()
    assert resp.status == 403
    assert b"balance" not in body and b'"error"' not in body  # ST's page, not the plugin's answer
    assert "Blocked connection from 127.0.0.2" in single.st.log_text()


def test_st_shutdown_stops_the_service_it_started(single: PluginST) -> None:
    """Last in this module: SIGTERM to ST alone (not its process group), as a service manager or `kill`
    would send; ST awaits the plugin's exit(), which stops the service it started."""
    wait_for(lambda: "is up at" in single.st.log_text(), "the service")
    pid = started_pid(single.st.log_text())
    os.kill(pid, 0)  # alive
    process = single.st.process
    assert process is not None
    process.send_signal(signal.SIGTERM)
    process.wait(GUARD)
    wait_for(lambda: not pid_alive(pid), "the service to exit")
    assert f"stopped the NanoGPT Companion service (pid {pid})" in single.st.log_text()
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{single.port}/health", timeout=2)


def _token_or_none(setup: PluginST) -> str | None:
    try:
        return setup.token()
    except (OSError, ValueError, KeyError):
        return None


# ---------------------------------------------------------------------------------------- multi-user


def test_login_is_required(multi: PluginST) -> None:
    anonymous = multi.client()
    answer = call(anonymous, "GET", f"{PLUGIN}/api/account")
    assert answer.status in (401, 403)
    assert b"balance" not in answer.body


def test_each_user_reaches_only_their_own_data(multi: PluginST) -> None:
    alice = multi.client("alice", ALICE_PASSWORD)
    admin = multi.client(DEFAULT_USER)
    # ST hands each logged-in user their own token file, and only theirs.
    alice_file = call(alice, "GET", "/user/files/nanogpt-companion.json")
    assert alice_file.json()["token"] == multi.token("alice") != multi.token(DEFAULT_USER)
    assert call(multi.client(), "GET", "/user/files/nanogpt-companion.json").status in (401, 403)
    mine = call(alice, "GET", f"{PLUGIN}/api/account").json()
    theirs = call(admin, "GET", f"{PLUGIN}/api/account").json()
    assert mine["balance"] == direct(multi.port, multi.token("alice"), "/api/account")["balance"]
    assert theirs["balance"] == direct(multi.port, multi.token(DEFAULT_USER), "/api/account")["balance"]
    assert mine["balance"] != theirs["balance"]
    assert hello_through_st(alice)["user"] == "alice"
    assert hello_through_st(admin)["user"] == DEFAULT_USER


def test_a_second_user_cannot_reaim_the_plugin_either(multi: PluginST) -> None:
    alice = multi.client("alice", ALICE_PASSWORD)
    token_path = multi.stack.user_dir("alice") / "user" / "files" / "nanogpt-companion.json"
    original = token_path.read_bytes()
    impostor = Impostor()
    multi.run_on_fake_loop(impostor.start())
    try:
        for template in REAIM_ATTEMPTS:
            forged = {**json.loads(original), "url": template.format(port=impostor.port)}
            data = base64.b64encode(json.dumps(forged).encode()).decode()
            assert (
                call(
                    alice, "POST", "/api/files/upload", {"name": "nanogpt-companion.json", "data": data}
                ).status
                == 200
            )
            answer = call(alice, "GET", f"{PLUGIN}/api/account")
            assert answer.status == 200
            assert (
                answer.json()["balance"]
                == direct(multi.port, multi.token("alice"), "/api/account")["balance"]
            )
    finally:
        multi.run_on_fake_loop(impostor.stop())
        token_path.write_bytes(original)
    assert impostor.connections == []


def test_validators_and_compression_pass_through_st(multi: PluginST) -> None:
    """ST runs a compression middleware on every response; the plugin's pass-through must survive it: a
    gzip body from the service arrives byte for byte, a 304 stays a 304, the validators and Vary stay."""
    service = multi.stack.service
    assert service is not None
    link_file = link_path(multi.st.folder)
    saved = link_file.read_bytes()
    link = read_link(link_file)
    assert link is not None
    seen: list[dict[str, object]] = []
    app = web.Application()
    app.router.add_get("/health", proving_health(link.secret))
    app.router.add_get("/api/validated", validated_route(seen))
    runner = web.AppRunner(app)
    port = free_port()
    service.stop()  # nothing rewrites the link file meanwhile

    async def serve() -> None:
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()

    multi.run_on_fake_loop(serve())
    write_link(link_file, link.model_copy(update={"url": f"http://127.0.0.1:{port}"}))
    try:
        alice = multi.client("alice", ALICE_PASSWORD)
        url = f"{PLUGIN}/api/validated"
        full = call(alice, "GET", url, headers={"Accept-Encoding": "gzip"})
        assert full.status == 200
        assert full.headers["content-encoding"] == "gzip"
        assert full.headers["etag"] == CATALOG_ETAG
        assert "accept-encoding" in full.headers["vary"].lower()
        assert full.body == CATALOG_GZIP
        unchanged = call(
            alice, "GET", url, headers={"Accept-Encoding": "gzip", "If-None-Match": CATALOG_ETAG}
        )
        assert unchanged.status == 304
        assert unchanged.headers["etag"] == CATALOG_ETAG
        assert unchanged.body == b""
        plain = call(alice, "GET", url, headers={"Accept-Encoding": "identity"})
        assert plain.status == 200 and plain.body == CATALOG_BODY
    finally:
        link_file.write_bytes(saved)
        multi.run_on_fake_loop(runner.cleanup())
        service.relaunch()
    sent = [h["headers"] for h in seen]  # type: ignore[index]
    assert [h.get("if-none-match") for h in sent] == [None, CATALOG_ETAG, None]  # type: ignore[union-attr]
