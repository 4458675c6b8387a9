"""The one-shot commands as users run them: they write nothing into ST's folders, and what they print is
true and said once (issue 12, items 5 and 6)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from nanogpt_companion.keys import ResolvedKey
from nanogpt_companion.store import Store
from tests.doctor_service.conftest import nanogpt_settings
from tests.fakes.service_fixtures import (
    REPO,
    UpstreamThread,
    build_stack_install,
    free_port,
    start_fake_upstream,
    start_service,
)
from tests.fakes.st_fixtures import MULTI_KEY_ACTIVE, STInstall, UserSpec, build_st_install

CATALOGUE_RULES = "reasoning, images, context, model.gone, textgen.nanogpt"


@pytest.fixture(scope="module")
def upstream() -> Iterator[UpstreamThread]:
    fake = start_fake_upstream(n_models=50)
    try:
        yield fake
    finally:
        fake.stop()


def cli(*args: str, port: int | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NANOGPT")}
    # The port this command would assume for the service: never the one a test's service runs on.
    env["NANOGPT_COMPANION_PORT"] = str(port or free_port())
    return subprocess.run(
        [sys.executable, "-m", "nanogpt_companion", *args],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=90, check=False,
    )  # fmt: skip


def data_root_state(st: STInstall) -> dict[str, tuple[bytes, int] | None]:
    """Every file (bytes, mtime) and folder under the data root."""
    return {
        p.relative_to(st.data_root).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns)
        if p.is_file()
        else None
        for p in sorted(st.data_root.rglob("*"))
    }


def unreachable() -> str:
    return f"http://127.0.0.1:{free_port()}/api"  # bound once and closed: nothing listens there


def test_doctor_and_catalog_write_nothing_into_sillytavern(tmp_path: Path, upstream: UpstreamThread) -> None:
    st_port = free_port()
    st = build_stack_install(tmp_path, st_port)
    service = start_service(st, upstream, tmp_path / "state", st_port=st_port)
    service.stop()  # its token files point at its port; the commands below assume another one
    before = data_root_state(st)
    assert any(path.endswith("user/files/nanogpt-companion.json") for path in before)

    common = [
        "--sillytavern",
        str(st.st_dir),
        "--upstream",
        upstream.base_url,
        "--state-dir",
        str(tmp_path / "s"),
    ]
    doctor = cli("doctor", *common)
    as_json = cli("doctor", "--json", *common)
    catalog = cli("catalog", *common)

    assert "== default-user" in doctor.stdout and "== alice" in doctor.stdout, doctor.stderr
    assert set(json.loads(as_json.stdout)) == {"default-user", "alice"}
    assert catalog.returncode == 0 and catalog.stdout.strip().endswith("models"), catalog.stderr
    assert data_root_state(st) == before


def test_doctor_creates_no_token_files_where_there_are_none(tmp_path: Path, upstream: UpstreamThread) -> None:
    st = build_st_install(tmp_path, users=["default-user"])
    before = data_root_state(st)
    done = cli("doctor", "--sillytavern", str(st.st_dir), "--upstream", upstream.base_url, "--state-dir",
               str(tmp_path / "s"))  # fmt: skip
    assert "== default-user" in done.stdout, done.stderr
    assert data_root_state(st) == before
    assert not st.user().token_file.exists()


def test_doctor_fix_finds_the_service_on_the_port_it_wrote(tmp_path: Path, upstream: UpstreamThread) -> None:
    """The service runs on another port than the command's settings say: --fix still goes through it (an
    open tab gets the fix live), found through the URL in the token file, which stays untouched."""
    st_port = free_port()
    st = build_stack_install(tmp_path, st_port)
    service = start_service(st, upstream, tmp_path / "state", st_port=st_port)
    try:
        token_before = service.token_file("default-user").read_bytes()
        done = cli("doctor", "--sillytavern", str(st.st_dir), "--upstream", upstream.base_url, "--state-dir",
                   str(tmp_path / "s"), "--fix", "--user", "default-user")  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        assert "fixing default-user through it" in done.stderr
        assert service.token_file("default-user").read_bytes() == token_before
    finally:
        service.stop()


def healthy_install(tmp_path: Path) -> STInstall:
    """Nothing to find once the catalogue is known: PPP set, and a model the fake NanoGPT lists."""
    settings = nanogpt_settings("merge", nanogpt_model="openai/gpt-5.2")
    return build_st_install(tmp_path, users={"healthy": UserSpec(settings=settings)})


def test_doctor_says_which_checks_it_skipped_when_nanogpt_is_unreachable(tmp_path: Path) -> None:
    st = healthy_install(tmp_path)
    common = [
        "--sillytavern",
        str(st.st_dir),
        "--upstream",
        unreachable(),
        "--state-dir",
        str(tmp_path / "s"),
    ]

    done = cli("doctor", *common)

    assert done.returncode == 3, done.stdout + done.stderr
    out = " ".join(done.stdout.split())  # the note is wrapped to the terminal width
    assert "no problems found by the checks that ran" in out
    assert f"skipped 5 checks that need NanoGPT's model list ({CATALOGUE_RULES}):" in out
    assert "could not connect" in out
    assert "no problems found\n" not in done.stdout
    assert done.stderr == ""  # said once, on stdout, not again as a log line

    report = json.loads(cli("doctor", "--json", *common).stdout)["healthy"]
    assert report["skipped"]["rules"] == CATALOGUE_RULES.split(", ")
    assert "could not connect" in report["skipped"]["reason"]


def test_doctor_with_the_catalogue_or_deliberately_offline(tmp_path: Path, upstream: UpstreamThread) -> None:
    st = healthy_install(tmp_path)
    state = str(tmp_path / "s")
    offline = cli("doctor", "--sillytavern", str(st.st_dir), "--state-dir", state, "--offline")
    assert offline.returncode == 0, offline.stdout + offline.stderr  # skipping was asked for
    assert "--offline, and no catalogue was saved by an earlier run" in " ".join(offline.stdout.split())

    online = cli(
        "doctor", "--sillytavern", str(st.st_dir), "--upstream", upstream.base_url, "--state-dir", state
    )
    assert online.returncode == 0, online.stdout + online.stderr
    assert online.stdout.splitlines()[1:] == ["   no problems found"]
    as_json = cli("doctor", "--json", "--sillytavern", str(st.st_dir), "--upstream", upstream.base_url,
                  "--state-dir", state)  # fmt: skip
    assert json.loads(as_json.stdout)["healthy"]["skipped"] is None

    # The run online saved the catalogue: --offline now checks everything against it.
    again = cli("doctor", "--sillytavern", str(st.st_dir), "--state-dir", state, "--offline")
    assert again.returncode == 0 and "skipped" not in again.stdout, again.stdout


def test_catalog_prints_its_error_once(tmp_path: Path) -> None:
    done = cli("catalog", "--upstream", unreachable(), "--state-dir", str(tmp_path))
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: NanoGPT is not answering"), done.stderr
    assert done.stdout == ""


def test_serve_help_explains_data_root() -> None:
    text = " ".join(cli("serve", "--help").stdout.split())
    assert "(instead of DIR)" not in text
    assert "--data-root DIR SillyTavern's data folder, the one holding a folder per user (instead of" in text
    assert "--sillytavern; by default it is dataRoot from the SillyTavern folder's config.yaml)" in text


async def test_doctor_says_when_it_checked_against_a_saved_catalogue(
    tmp_path: Path, upstream: UpstreamThread
) -> None:
    st = healthy_install(tmp_path)
    state = tmp_path / "s"
    online = cli(
        "doctor", "--sillytavern", str(st.st_dir), "--upstream", upstream.base_url, "--state-dir", str(state)
    )
    assert online.returncode == 0, online.stdout + online.stderr
    # That run saved the catalogue; make it a day old, as if NanoGPT had been unreachable since.
    fingerprint = ResolvedKey(MULTI_KEY_ACTIVE, "sillytavern").fingerprint
    async with Store(state / "companion.sqlite3") as store:
        saved = await store.last_catalog_snapshot(fingerprint)
        assert saved is not None
        await store.save_catalog_snapshot(fingerprint, saved[0] - 86400, saved[1])

    done = cli(
        "doctor", "--sillytavern", str(st.st_dir), "--upstream", unreachable(), "--state-dir", str(state)
    )

    assert done.returncode == 0, done.stdout + done.stderr  # every check ran, against the saved list
    assert "skipped" not in done.stdout
    [note] = done.stderr.splitlines()
    assert note.startswith("note: NanoGPT is not answering") and "as saved on" in note
