"""Issue 13 item 9: hostile sizes cost neither memory nor log noise.

Three 59 MB presets took the service to 797 MB, and every settings save re-read all of them. Now a preset
past 1 MB is a finding that says why it was not read, presets are re-read only when they change, and the
service's peak RSS (``VmHWM`` in /proc/<pid>/status: the kernel's high-water mark of resident memory, so
no short peak escapes a sampler) stays under 200 MB. Malformed HTTP requests log one line, not aiohttp's
11-line ERROR traceback.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from nanogpt_companion.doctor_presets import PRESET_MAX_BYTES, PresetReader
from nanogpt_companion.sillytavern.documents import MAX_DOCUMENT_BYTES, read_document
from nanogpt_companion.sillytavern.errors import DocumentTooLarge
from tests.doctor_service.conftest import (
    StartCompanion,
    nanogpt_settings,
    ppp_of,
    st_bytes,
    st_save,
    start_companion,
)
from tests.fakes.racing_st_writer import MODELS
from tests.fakes.service_fixtures import RunningService, free_port, start_fake_upstream, start_service
from tests.fakes.st_fixtures import MakeSTInstall, UserSpec, build_st_install
from tests.fixtures import ST_FIXTURES

__all__ = ["start_companion"]

SHIPPED_PRESET: dict[str, Any] = json.loads((ST_FIXTURES / "openai-preset.Default.json").read_text("utf-8"))
PEAK_LIMIT_MB = 200


def huge_preset(path: Path, megabytes: int) -> None:
    """A preset of ``megabytes`` MB shaped like ST's (a long prompt list), not one big string: parsing it
    would build millions of objects, the expensive kind."""
    preset = dict(SHIPPED_PRESET, chat_completion_source="nanogpt", custom_prompt_post_processing="")
    prompt = {
        "identifier": "p000000",
        "name": "Prompt",
        "role": "system",
        "content": "x" * 150,
        "enabled": True,
    }
    empty = len(json.dumps(dict(preset, prompts=[]), indent=4))
    per_prompt = (len(json.dumps(dict(preset, prompts=[prompt] * 1000), indent=4)) - empty) / 1000
    count = int((megabytes * 1024 * 1024 - empty) / per_prompt) + 10
    preset["prompts"] = [dict(prompt, identifier=f"p{i:06d}") for i in range(count)]
    path.write_text(json.dumps(preset, indent=4), encoding="utf-8")


def vm_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def test_three_59_mb_presets_keep_the_peak_under_200_mb(tmp_path: Path) -> None:
    st_port = free_port()
    st = build_st_install(
        tmp_path,
        users={"default-user": UserSpec(settings=nanogpt_settings("merge"), presets={})},
        port=st_port,
    )
    user = st.user()
    user.presets_dir.mkdir(parents=True)
    huge_preset(user.preset("Huge 1"), 59)
    for n in (2, 3):
        shutil.copyfile(user.preset("Huge 1"), user.preset(f"Huge {n}"))
    assert all(user.preset(f"Huge {n}").stat().st_size >= 59 * 1024 * 1024 for n in (1, 2, 3))
    upstream = start_fake_upstream()
    service = start_service(st, upstream, tmp_path / "state", st_port=st_port)
    try:
        status, report = service.request("GET", "/api/doctor")
        assert status == 200
        too_large = [f for f in report["findings"] if f["details"].get("reason") == "too_large"]
        assert sorted(f["preset"] for f in too_large) == ["Huge 1", "Huge 2", "Huge 3"]
        assert all(" is 59." in f["explanation"] and "kilobytes" in f["explanation"] for f in too_large), (
            too_large
        )
        # Five ST saves with a bad value, each after the user picked another value (so "None" is a new
        # choice, fixed automatically again, not the user putting it back): each is fixed, so each went
        # through a full doctor scan.
        for i in range(5):
            st_save(user.settings, nanogpt_settings("semi", nanogpt_model=MODELS[i % len(MODELS)]))
            service.request("GET", "/api/doctor?refresh=1")  # the service has seen "semi"
            st_save(user.settings, nanogpt_settings("", nanogpt_model=MODELS[i % len(MODELS)]))
            wait_for(lambda: ppp_of(user.settings) == "merge")
        service.request("POST", "/api/catalog/refresh")  # and a catalogue refresh on top
        peak = vm_hwm_mb(service.process.pid)
        print(f"\npeak RSS (VmHWM) with three 59 MB presets, 5 saves and a refresh: {peak:.0f} MB")
        assert peak < PEAK_LIMIT_MB
        # Each preset was looked at once, not once per save.
        assert service.log_text().count("not checking preset Huge") == 3
    finally:
        service.stop()
        upstream.stop()


def wait_for(predicate: Any, within: float = 120.0) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def test_presets_are_read_again_only_when_they_change(make_st_install: MakeSTInstall) -> None:
    st = make_st_install(users={"default-user": UserSpec(presets={"A": SHIPPED_PRESET, "B": SHIPPED_PRESET})})
    user = st.user()
    reader = PresetReader()
    first = reader.read(user)
    assert sorted(first.data) == ["A", "B"] and reader.reads == 2
    st_save(user.settings, nanogpt_settings("single"))  # settings saves do not touch presets
    assert reader.read(user).versions == first.versions and reader.reads == 2
    st_save(user.preset("B"), dict(SHIPPED_PRESET, temperature=0.5))
    again = reader.read(user)
    assert reader.reads == 3 and again.versions["A"] == first.versions["A"]
    assert again.versions["B"] != first.versions["B"]
    # Only what selecting a preset switches is kept: its top-level settings, not its prompt lists.
    assert "prompts" not in again.data["B"] and again.data["B"]["temperature"] == 0.5
    user.preset("A").unlink()
    assert sorted(reader.read(user).data) == ["B"] and reader.reads == 3


async def test_a_preset_too_large_to_read_is_a_finding(
    make_st_install: MakeSTInstall, start_companion: StartCompanion
) -> None:
    big = dict(SHIPPED_PRESET, padding="x" * (PRESET_MAX_BYTES + 1))
    st = make_st_install(
        users={"default-user": UserSpec(settings=nanogpt_settings("merge"), presets={"Big": big})}
    )
    companion = await start_companion(st)
    report = await (await companion.get("/api/doctor")).json()
    [finding] = [f for f in report["findings"] if f["preset"] == "Big"]
    assert finding["title"] == 'Chat Completion preset "Big" was not checked'
    assert "more than the 1 MB limit" in finding["explanation"] and finding["fixable"] is False
    assert finding["severity"] == "warning"


async def test_settings_too_large_to_read_are_reported_not_parsed(
    make_st_install: MakeSTInstall, start_companion: StartCompanion
) -> None:
    st = make_st_install(users={"default-user": UserSpec(settings=nanogpt_settings(""))})
    path = st.user().settings
    data = nanogpt_settings("")
    data["extension_settings"]["blob"] = "x" * MAX_DOCUMENT_BYTES
    path.write_bytes(st_bytes(data))
    before = path.read_bytes()
    companion = await start_companion(st)
    report = await (await companion.get("/api/doctor")).json()
    assert report["error"]["code"] == "settings_unreadable"
    assert "more than the 16 MB limit" in report["error"]["message"]
    assert path.read_bytes() == before


def test_a_document_too_costly_to_parse_is_refused(tmp_path: Path) -> None:
    """Under the size cap, but ``[{}, {}, ...]``: a few MB of text, hundreds of MB as Python objects."""
    path = tmp_path / "settings.json"
    path.write_bytes(b"[" + b"{}," * 2_500_000 + b"{}]")
    assert path.stat().st_size < MAX_DOCUMENT_BYTES
    with pytest.raises(DocumentTooLarge, match="so many values"):
        read_document(path)


# ---- malformed HTTP requests ---------------------------------------------------------------------------


async def send_raw(service: RunningService, raw: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", service.port)
    writer.write(raw)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(4096), 10)
    writer.close()
    return answer


async def test_a_malformed_request_logs_one_line(tmp_path: Path) -> None:
    st_port = free_port()
    st = build_st_install(tmp_path, users=["default-user"], port=st_port)
    upstream = start_fake_upstream()
    service = start_service(st, upstream, tmp_path / "state", st_port=st_port)
    try:
        before = service.log_text()
        bad = (
            b"GET / HTTP/1.1\r\nHost: " + b"a" * 20_000 + b"\r\n\r\n",  # header line too long
            b"GET / HTTP/1.1\r\nHost: localhost\r\nContent-Length: x\r\n\r\n",  # bad header value
            b"GET /\x00 HTTP/1.1\r\n\r\n",  # bad request line
        )
        for raw in bad:
            answer = await send_raw(service, raw)
            assert answer.startswith(b"HTTP/1.") and b" 400 " in answer.split(b"\r\n", 1)[0]
        for _ in range(100):
            added = service.log_text()[len(before) :]
            if added.count("refused a malformed HTTP request") == len(bad):
                break
            await asyncio.sleep(0.05)
        lines = [line for line in added.splitlines() if "aiohttp.server" in line]
        assert len(lines) == len(bad), added
        assert all(
            "refused a malformed HTTP request from 127.0.0.1" in line and " INFO " in line for line in lines
        )
        assert "Traceback" not in added and "aaaaaaaa" not in added
    finally:
        service.stop()
        upstream.stop()
