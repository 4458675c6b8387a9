"""SillyTavern releases from the npm registry, unpacked once into a cache outside the repository.

Each version is unpacked with its dependencies *inside its own folder* (``npm pack``, untar, ``npm install
--omit=dev`` in it): ST 1.13.5 refuses to load files from outside its folder when npm hoists them
(``src/fetch-patch.js``). After the install the server is started once so webpack's build of ST's frontend
libraries (15 s) lands in the cache too; later starts take about 3 s.

The cache is shared by every test session on the machine (``~/.cache/nanogpt-companion/sillytavern``, or
``$NANOGPT_COMPANION_ST_CACHE``); a file lock per version keeps parallel sessions from installing the same
version twice. Tests never run ST from the cache itself: ``instance_copy`` makes a hard-linked copy, so the
plugins, global extensions and config a test writes stay in its own temporary folder.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

READY_STAMP = ".ngc-ready"
WARM_DATA = ".ngc-warm-data"  # the warm-up run's data root (holds webpack's cache outside Docker)
NPM_TIMEOUT = 900


class STInstallError(RuntimeError):
    """ST could not be installed (no npm, no registry, a failed install); the message says which step."""


def cache_root() -> Path:
    explicit = os.environ.get("NANOGPT_COMPANION_ST_CACHE")
    if explicit:
        return Path(explicit)
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "nanogpt-companion" / "sillytavern"


def installed_path(version: str) -> Path | None:
    """The cached install of ``version`` if it is complete, else None (nothing is installed)."""
    folder = cache_root() / version
    return folder if (folder / READY_STAMP).exists() else None


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run(cmd: list[str], cwd: Path, step: str) -> None:
    try:
        result = subprocess.run(
            cmd, cwd=cwd, capture_output=True, text=True, timeout=NPM_TIMEOUT, check=False
        )
    except FileNotFoundError as exc:
        raise STInstallError(f"{step}: {cmd[0]} is not installed") from exc
    except subprocess.TimeoutExpired as exc:
        raise STInstallError(f"{step}: timed out after {NPM_TIMEOUT} s") from exc
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-15:]
        raise STInstallError(f"{step} failed ({result.returncode}):\n" + "\n".join(tail))


def ensure_sillytavern(version: str) -> Path:
    """The cached ST ``version``, installed from the npm registry first if needed."""
    ready = installed_path(version)
    if ready is not None:
        return ready
    root = cache_root()
    with _locked(root / f"{version}.lock"):
        ready = installed_path(version)
        if ready is not None:
            return ready
        folder = root / version
        if not (folder / "node_modules").is_dir():
            _install(version, folder)
        _warm_up(folder)
        (folder / READY_STAMP).write_text(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()) + "\n")
        return folder


def _install(version: str, folder: Path) -> None:
    log.warning("installing SillyTavern %s from the npm registry into %s (once)", version, folder)
    print(f"[realst] installing SillyTavern {version} into {folder} (once; about 430 MB)", flush=True)
    work = Path(tempfile.mkdtemp(prefix=f"{version}.partial-", dir=folder.parent))
    try:
        _run(["npm", "pack", f"sillytavern@{version}", "--silent"], work, f"npm pack sillytavern@{version}")
        tarball = next(work.glob("sillytavern-*.tgz"))
        with tarfile.open(tarball) as archive:
            archive.extractall(work, filter="data")
        package = work / "package"
        _run(
            ["npm", "install", "--omit=dev", "--no-audit", "--no-fund", "--loglevel=error"],
            package,
            f"npm install (SillyTavern {version})",
        )
        if folder.exists():
            shutil.rmtree(folder)
        package.rename(folder)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _warm_up(folder: Path) -> None:
    """Start the server once so webpack's compiled frontend libraries are cached with the install."""
    from tests.realst.server import free_port

    data = folder / WARM_DATA
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir()
    port = free_port()
    config = data / "config.yaml"
    shutil.copyfile(folder / "default" / "config.yaml", config)
    cmd = [
        "node",
        "server.js",
        "--port",
        str(port),
        "--listen",
        "false",
        "--browserLaunchEnabled",
        "false",
        "--dataRoot",
        str(data),
        "--configPath",
        str(config),
    ]
    with (data / "server.log").open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=folder, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                text = (data / "server.log").read_text(errors="replace")[-3000:]
                raise STInstallError(f"SillyTavern exited during its first start:\n{text}")
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"http://127.0.0.1:{port}/version", timeout=2) as resp,
            ):
                if resp.status == 200:
                    return
            time.sleep(0.25)
        raise STInstallError("SillyTavern did not answer within 300 s of its first start")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 15)
        proc.wait(30)
        # Versions that write a config.yaml beside server.js on first start must not leave one in the cache.
        (folder / "config.yaml").unlink(missing_ok=True)


def instance_copy(version: str, dest: Path) -> Path:
    """A private, hard-linked copy of the cached install: tests may add plugins, global extensions and a
    config.yaml to it without touching the cache (ST replaces files by rename, never in place)."""
    source = ensure_sillytavern(version)
    _run(["cp", "-al", str(source), str(dest)], dest.parent, "copy the SillyTavern install")
    shutil.rmtree(dest / WARM_DATA, ignore_errors=True)
    # A config.yaml in the cache (left by an older harness or a manual run) would be a hard link shared by
    # every copy: each instance gets its own, written by RealSillyTavern.configure.
    (dest / "config.yaml").unlink(missing_ok=True)
    # webpack rewrites its cache files in place; a real copy keeps that away from the shared install.
    dist = dest / "dist"
    if dist.is_dir():
        shutil.rmtree(dist)
        shutil.copytree(source / "dist", dist)
    return dest


def warm_webpack_cache(version: str) -> Path | None:
    """Outside Docker ST keeps webpack's cache in ``<dataRoot>/_webpack``: the warm-up run's copy."""
    folder = installed_path(version)
    if folder is None:
        return None
    cached = folder / WARM_DATA / "_webpack"
    return cached if cached.is_dir() else None


def main() -> None:
    """Install every version the suite tests (``python -m tests.realst.install``); quiet when cached."""
    from tests.realst.versions import ST_VERSIONS

    for version in ST_VERSIONS:
        ensure_sillytavern(version)


if __name__ == "__main__":
    main()
