"""Issue 13 item 2, at the exact moments: an ST save landing inside the compare-and-swap never dies.

Each test makes "ST" save (temp file + rename, as write-file-atomic does) at one precise point of our
write through the write path's fault hook or a wrapped exchange, then checks whose content the file
holds. The service-level race is tests/hardening/test_cas_race.py.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from nanogpt_companion.sillytavern.documents import is_companion_temp, read_document, replace_file_atomic
from nanogpt_companion.sillytavern.errors import ConcurrentModification
from nanogpt_companion.sillytavern.patching import PatchEdit, patched_text, write_patched
from nanogpt_companion.sillytavern.swap import exchange_files, replace_when_quiet
from tests.sillytavern.test_documents import PPP, settings_file

__all__ = ["settings_file"]  # the fixture, shared with the other write-path tests

pytestmark = pytest.mark.skipif(os.uname().sysname != "Linux", reason="RENAME_EXCHANGE is Linux-only")


def st_save(path: Path, content: bytes) -> None:
    tmp = path.with_name(f"{path.name}.st-{os.urandom(4).hex()}")
    tmp.write_bytes(content)
    os.replace(tmp, path)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if is_companion_temp(p.name) or ".st-" in p.name)


def theirs(n: int) -> bytes:
    return b'{\n    "saved_by_st": %d\n}' % n


def test_the_exchange_is_available_here(tmp_path: Path) -> None:
    # The guarantees below rest on it; a file system without it takes the fallback (tested further down).
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"a")
    b.write_bytes(b"b")
    assert exchange_files(a, b)
    assert (a.read_bytes(), b.read_bytes()) == (b"b", b"a")


def test_a_save_landing_between_the_check_and_the_swap_is_put_back(settings_file: Path) -> None:
    """The window that lost saves before: our content check passed, then ST saved, then we replaced."""
    doc = read_document(settings_file)

    def st_saves_now(stage: str) -> None:
        if stage == "before_replace":
            st_save(settings_file, theirs(1))

    with pytest.raises(ConcurrentModification):
        write_patched(doc, [PatchEdit(PPP, "merge")], fault_hook=st_saves_now)
    assert settings_file.read_bytes() == theirs(1)
    assert leftovers(settings_file.parent) == []


def test_a_save_landing_just_after_the_swap_stays(settings_file: Path) -> None:
    """Our fix went in; ST saved over it a moment later: ST's save is the file, nothing is put back."""
    doc = read_document(settings_file)

    def st_saves_now(stage: str) -> None:
        if stage == "swapped":
            st_save(settings_file, theirs(2))

    result = write_patched(doc, [PatchEdit(PPP, "merge")], fault_hook=st_saves_now)
    assert result.changed
    assert settings_file.read_bytes() == theirs(2)
    assert leftovers(settings_file.parent) == []


def test_saves_landing_while_a_conflict_is_put_back_leave_the_newest(settings_file: Path) -> None:
    """ST saves before our swap and again during each of the first two put-back swaps: newest wins."""
    doc = read_document(settings_file)
    new = patched_text(doc, [PatchEdit(PPP, "merge")]).encode()
    calls = 0

    def exchange_while_st_saves(a: Path, b: Path) -> bool:
        nonlocal calls
        calls += 1
        if calls <= 3:
            st_save(b, theirs(calls))  # lands right before each exchange
        return exchange_files(a, b)

    with pytest.raises(ConcurrentModification):
        replace_file_atomic(settings_file, new, expected_sha256=doc.sha256, exchange=exchange_while_st_saves)
    assert settings_file.read_bytes() == theirs(3)
    assert calls == 4  # swap, put back (brings out save 2), put save 2 back (brings out 3), put 3 back
    assert leftovers(settings_file.parent) == []


def test_an_unchanged_file_is_patched_and_the_old_one_removed(settings_file: Path) -> None:
    doc = read_document(settings_file)
    inode = settings_file.stat().st_ino
    write_patched(doc, [PatchEdit(PPP, "merge")])
    assert read_document(settings_file).data["oai_settings"]["custom_prompt_post_processing"] == "merge"
    assert settings_file.stat().st_ino != inode
    assert leftovers(settings_file.parent) == []


def test_a_file_deleted_before_the_swap_is_a_conflict(settings_file: Path) -> None:
    doc = read_document(settings_file)

    def deleted(stage: str) -> None:
        if stage == "before_replace":
            settings_file.unlink()

    with pytest.raises(ConcurrentModification):
        write_patched(doc, [PatchEdit(PPP, "merge")], fault_hook=deleted)
    assert not settings_file.exists() and leftovers(settings_file.parent) == []


# ---- without an atomic exchange ------------------------------------------------------------------------


def no_exchange(_a: Path, _b: Path) -> bool:
    return False


def test_fallback_waits_for_a_quiet_file_then_writes(settings_file: Path) -> None:
    doc = read_document(settings_file)  # just written: not quiet yet
    new = patched_text(doc, [PatchEdit(PPP, "merge")]).encode()
    tmp = settings_file.with_name(".fallback.tmp")
    tmp.write_bytes(new)
    waited: list[float] = []

    def sleep(seconds: float) -> None:
        waited.append(seconds)
        time.sleep(seconds)

    replace_when_quiet(tmp, settings_file, doc.sha256, quiet=0.2, sleep=sleep)
    assert waited  # it did wait for the file to go quiet
    assert settings_file.read_bytes() == new


def test_fallback_refuses_a_file_saved_while_it_waited(settings_file: Path) -> None:
    doc = read_document(settings_file)
    tmp = settings_file.with_name(".fallback.tmp")
    tmp.write_bytes(b"{}")
    saves = 0

    def st_saves_meanwhile(seconds: float) -> None:
        nonlocal saves
        if not saves:
            st_save(settings_file, theirs(9))
            saves += 1
        time.sleep(seconds)

    with pytest.raises(ConcurrentModification):
        replace_when_quiet(tmp, settings_file, doc.sha256, quiet=0.2, sleep=st_saves_meanwhile)
    assert saves == 1
    assert settings_file.read_bytes() == theirs(9)


def test_fallback_gives_up_on_a_file_that_never_goes_quiet(settings_file: Path) -> None:
    doc = read_document(settings_file)
    tmp = settings_file.with_name(".fallback.tmp")
    tmp.write_bytes(b"{}")
    saves = 0

    def busy(seconds: float) -> None:
        nonlocal saves
        st_save(settings_file, doc.raw)  # ST re-saves the same content, again and again
        saves += 1
        time.sleep(min(seconds, 0.05))

    with pytest.raises(ConcurrentModification):
        replace_when_quiet(tmp, settings_file, doc.sha256, quiet=0.2, max_wait=0.5, sleep=busy)
    assert saves >= 2
    assert settings_file.read_bytes() == doc.raw


def test_the_service_write_path_uses_the_fallback_when_there_is_no_exchange(settings_file: Path) -> None:
    doc = read_document(settings_file)
    new = patched_text(doc, [PatchEdit(PPP, "merge")]).encode()
    replace_file_atomic(
        settings_file, new, expected_sha256=doc.sha256, exchange=no_exchange, quiet_period=0.0
    )
    assert settings_file.read_bytes() == new
    assert leftovers(settings_file.parent) == []
