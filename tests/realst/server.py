"""One real SillyTavern server: a private copy of a cached release, its config.yaml, its process.

The copy's own ``config.yaml`` names the data root and the port, as a user's would, so our service finds
both through ``--sillytavern <copy>`` exactly as it does for users. ST is started with ``node server.js``
from its folder (webpack's cache lives relative to the working directory) and stopped by its process group.

``STClient`` speaks ST's HTTP API the way its frontend does (session cookie, CSRF token from
``/csrf-token``, login for multi-user mode), for set-up that a user would do in ST's UI: writing a key
through ST's secrets API, creating users through ST's admin API.
"""

from __future__ import annotations

import contextlib
import http.cookiejar
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.realst.install import instance_copy, warm_webpack_cache

START_TIMEOUT = 180.0  # a cold webpack build alone takes 15 s on an idle 2-core machine


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _set_dotted(config: dict[str, Any], dotted: str, value: Any) -> None:
    node = config
    *parents, last = dotted.split(".")
    for part in parents:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[last] = value


@dataclass
class RealSillyTavern:
    version: str
    folder: Path
    data_root: Path
    port: int
    ca_pem: Path | None = None
    process: subprocess.Popen[bytes] | None = None
    config: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def create(
        cls,
        version: str,
        base: Path,
        *,
        proxy_url: str | None = None,
        ca_pem: Path | None = None,
        config: dict[str, Any] | None = None,
    ) -> RealSillyTavern:
        """A stopped ST ``version`` under ``base``: ``base/SillyTavern`` (the copy) and ``base/data``.

        ``proxy_url`` routes ST's outgoing requests through the test internet (``internet.py``); ``config``
        sets further config.yaml keys, dotted (``{"enableUserAccounts": True}``).
        """
        base.mkdir(parents=True, exist_ok=True)
        folder = instance_copy(version, base / "SillyTavern")
        data_root = base / "data"
        data_root.mkdir(exist_ok=True)
        warm = warm_webpack_cache(version)
        if warm is not None and not (data_root / "_webpack").exists():
            shutil.copytree(warm, data_root / "_webpack")
        st = cls(version=version, folder=folder, data_root=data_root, port=free_port(), ca_pem=ca_pem)
        defaults = yaml.safe_load((folder / "default" / "config.yaml").read_text(encoding="utf-8"))
        st.config = defaults if isinstance(defaults, dict) else {}
        settings: dict[str, Any] = {
            "dataRoot": str(data_root),
            "port": st.port,
            "listen": False,
            "browserLaunch.enabled": False,
        }
        if proxy_url:
            settings["requestProxy.enabled"] = True
            settings["requestProxy.url"] = proxy_url
            settings["requestProxy.bypass"] = ["localhost", "127.0.0.1", "::1"]
        settings.update(config or {})
        st.configure(**settings)
        return st

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.folder / "config.yaml"

    @property
    def log_path(self) -> Path:
        return self.data_root.parent / f"sillytavern-{self.version}.log"

    def user_dir(self, handle: str = "default-user") -> Path:
        return self.data_root / handle

    def configure(self, **dotted: Any) -> None:
        """Set config.yaml keys (takes effect at the next start, as in ST)."""
        for key, value in dotted.items():
            _set_dotted(self.config, key, value)
        # A new file renamed into place: the copy's config.yaml may be a hard link into the shared cache
        # (1.13.5 ships one from its post-install), and writing through it would change every later copy.
        tmp = self.config_path.with_name("config.yaml.tmp")
        tmp.write_text(yaml.safe_dump(self.config, sort_keys=False), encoding="utf-8")
        tmp.replace(self.config_path)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def start(self, *, env: dict[str, str] | None = None, wait: bool = True) -> None:
        if self.process is not None and self.process.poll() is None:
            return
        full_env = {k: v for k, v in os.environ.items() if not k.startswith(("SILLYTAVERN_", "NANOGPT"))}
        if self.ca_pem is not None:
            full_env["NODE_EXTRA_CA_CERTS"] = str(self.ca_pem)
        full_env.update(env or {})
        cmd = [
            "node",
            "server.js",
            "--port",
            str(self.port),
            "--listen",
            "false",
            "--browserLaunchEnabled",
            "false",
        ]
        with self.log_path.open("ab") as log_file:
            self.process = subprocess.Popen(
                cmd,
                cwd=self.folder,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=full_env,
                start_new_session=True,
            )
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                raise RuntimeError(f"SillyTavern {self.version} exited:\n{self.log_text()[-4000:]}")
            try:
                with urllib.request.urlopen(self.url + "/version", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except urllib.error.HTTPError:
                return  # an answer all the same: with user accounts on, ST wants a login first
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(
            f"SillyTavern {self.version} did not answer in {timeout} s:\n{self.log_text()[-4000:]}"
        )

    def stop(self) -> None:
        proc = self.process
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)

    def restart(self) -> None:
        self.stop()
        self.start()

    def client(self) -> STClient:
        return STClient(self.url)


class STClient:
    """ST's HTTP API with a session, as its own frontend uses it."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))
        self._csrf: str | None = None

    def csrf_token(self) -> str:
        if self._csrf is None:
            _, body = self.request("GET", "/csrf-token", csrf=False)
            self._csrf = str(body["token"])
        return self._csrf

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        csrf: bool = True,
        headers: dict[str, str] | None = None,
        timeout: float = 30,
    ) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base_url + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if csrf and method not in ("GET", "HEAD"):
            req.add_header("X-CSRF-Token", self.csrf_token())
        for key, value in (headers or {}).items():
            req.add_header(key, value)
        try:
            with self.opener.open(req, timeout=timeout) as resp:
                return resp.status, _decode(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, _decode(exc.read())

    def post(self, path: str, body: Any = None) -> tuple[int, Any]:
        return self.request("POST", path, {} if body is None else body)

    def login(self, handle: str, password: str = "") -> None:
        status, body = self.post("/api/users/login", {"handle": handle, "password": password})
        if status != 200:
            raise RuntimeError(f"login as {handle} failed: {status} {body}")
        self._csrf = None  # the session changed; ST hands out a token per session

    def create_user(
        self, handle: str, name: str | None = None, password: str = "", admin: bool = False
    ) -> None:
        status, body = self.post(
            "/api/users/create",
            {"handle": handle, "name": name or handle, "password": password, "admin": admin},
        )
        if status != 200:
            raise RuntimeError(f"creating user {handle} failed: {status} {body}")

    def write_secret(self, key: str, value: str, label: str = "test") -> None:
        status, body = self.post("/api/secrets/write", {"key": key, "value": value, "label": label})
        if status not in (200, 204):
            raise RuntimeError(f"writing secret {key} failed: {status} {body}")


def _decode(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")
