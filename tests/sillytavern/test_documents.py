"""Reading (retry, clear reasons, size cap) and writing (CAS, atomic replace, failures leave no trace)."""

from __future__ import annotations

import errno
import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from nanogpt_companion.sillytavern.documents import (
    MAX_DOCUMENT_BYTES,
    is_companion_temp,
    read_document,
    read_document_async,
    write_new_file_atomic,
)
from nanogpt_companion.sillytavern.errors import (
    ConcurrentModification,
    DocumentMissing,
    DocumentTooLarge,
    DocumentUnreadable,
    WriteFailed,
)
from nanogpt_companion.sillytavern.patching import PatchEdit, write_patched, write_patched_async
from nanogpt_companion.sillytavern.stjson import dumps_st, loads_st
from tests.fixtures import ST_FIXTURES

FIXTURES = ST_FIXTURES
SETTINGS = FIXTURES / "settings.nanogpt-source-selected.json"
PPP = ("oai_settings", "custom_prompt_post_processing")


def no_sleep(_: float) -> None:
    pass


@pytest.fixture
def settings_file(tmp_path: Path) -> Path:
    path = tmp_path / "default-user" / "settings.json"
    path.parent.mkdir()
    shutil.copyfile(SETTINGS, path)
    return path


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if is_companion_temp(p.name))


# --- reading ---


def test_read_document_hashes_and_parses(settings_file: Path) -> None:
    doc = read_document(settings_file)
    assert doc.raw == SETTINGS.read_bytes()
    assert doc.data["oai_settings"]["custom_prompt_post_processing"] == "single"
    assert (
        len(doc.sha256) == 64
        and doc.sha256 != read_document(FIXTURES / "settings.full-after-first-save.json").sha256
    )
    assert "oai_settings" not in repr(doc)  # the content (possibly personal) stays out of logs


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DocumentMissing, match=r"settings\.json does not exist"):
        read_document(tmp_path / "settings.json")


def test_invalid_json_is_reported_with_position_after_retries(tmp_path: Path) -> None:
    path = tmp_path / "settings.json"
    path.write_text('{\n    "a": 1,\n    "b" 2\n}', encoding="utf-8")
    pauses: list[float] = []
    with pytest.raises(DocumentUnreadable) as info:
        read_document(path, sleep=pauses.append)
    assert info.value.reason == "settings.json is not valid JSON (line 3, column 9): Expecting ':' delimiter"
    assert len(pauses) == 4 and pauses == sorted(pauses) and pauses[0] > 0  # 5 attempts, growing pauses


def test_truncated_file_says_it_looks_cut_off(tmp_path: Path) -> None:
    path = tmp_path / "settings.json"
    path.write_bytes(SETTINGS.read_bytes()[:20000])
    with pytest.raises(DocumentUnreadable, match="looks cut off"):
        read_document(path, sleep=no_sleep)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "settings.json is empty"),
        (b"  \n", "settings.json is empty"),
        (b'{"a": "\xff"}', "settings.json is not valid UTF-8 text (byte 7 of 10)"),
        (b'{"a": NaN}', "settings.json is not valid JSON: NaN is not valid JSON"),
    ],
)
def test_other_unreadable_contents(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "settings.json"
    path.write_bytes(content)
    with pytest.raises(DocumentUnreadable) as info:
        read_document(path, sleep=no_sleep)
    assert info.value.reason == reason


def test_half_written_file_is_read_once_the_writer_finishes(tmp_path: Path) -> None:
    # A non-atomic writer: the first read sees half a file, the retry sees the finished one.
    path = tmp_path / "settings.json"
    full = SETTINGS.read_bytes()
    path.write_bytes(full[: len(full) // 2])

    def writer_finishes(_: float) -> None:
        path.write_bytes(full)

    doc = read_document(path, sleep=writer_finishes)
    assert doc.raw == full


def test_size_cap(tmp_path: Path) -> None:
    path = tmp_path / "settings.json"
    shutil.copyfile(SETTINGS, path)
    with pytest.raises(DocumentTooLarge, match="limit"):
        read_document(path, max_bytes=10_000)


def test_a_settings_file_just_under_the_size_limit_reads_and_patches(tmp_path: Path) -> None:
    data = loads_st(SETTINGS.read_text(encoding="utf-8"))
    # Large chat-like blobs inside extension settings, as some extensions store them.
    data["extension_settings"]["big"] = ["ünïcode line " * 80 for _ in range(13_000)]
    path = tmp_path / "settings.json"
    text = dumps_st(data)
    path.write_text(text, encoding="utf-8")
    assert 14 * 1024 * 1024 < path.stat().st_size < MAX_DOCUMENT_BYTES
    doc = read_document(path)
    write_patched(doc, [PatchEdit(PPP, "merge")])
    after = path.read_text(encoding="utf-8")
    assert after == text.replace(
        '"custom_prompt_post_processing": "single"', '"custom_prompt_post_processing": "merge"'
    )


# --- writing ---


def test_write_patched_replaces_atomically_and_keeps_mode(settings_file: Path) -> None:
    os.chmod(settings_file, 0o640)
    inode_before = settings_file.stat().st_ino
    doc = read_document(settings_file)
    result = write_patched(doc, [PatchEdit(PPP, "merge")])
    after = settings_file.read_bytes()
    assert after == SETTINGS.read_bytes().replace(
        b'"custom_prompt_post_processing": "single"', b'"custom_prompt_post_processing": "merge"'
    )
    assert result.changed and result.new_sha256 == read_document(settings_file).sha256
    assert result.old_values[0].value == "single" and result.old_values[0].existed
    assert stat.S_IMODE(settings_file.stat().st_mode) == 0o640
    assert settings_file.stat().st_ino != inode_before  # replaced by rename, like ST does
    assert leftovers(settings_file.parent) == []


def test_a_patch_that_changes_nothing_does_not_write(settings_file: Path) -> None:
    inode_before = settings_file.stat().st_ino
    result = write_patched(read_document(settings_file), [PatchEdit(PPP, "single")])
    assert not result.changed and settings_file.stat().st_ino == inode_before


def test_cas_conflict_writes_nothing(settings_file: Path) -> None:
    doc = read_document(settings_file)
    # ST saves in between (user changed something in the UI).
    theirs = SETTINGS.read_text(encoding="utf-8").replace('"temp_openai": 1', '"temp_openai": 0.5')
    settings_file.write_text(theirs, encoding="utf-8")
    with pytest.raises(ConcurrentModification, match="changed by another program"):
        write_patched(doc, [PatchEdit(PPP, "merge")])
    assert settings_file.read_text(encoding="utf-8") == theirs
    assert leftovers(settings_file.parent) == []


def test_cas_conflict_at_the_last_moment(settings_file: Path) -> None:
    # The other writer lands after our temp file is complete, right before the rename.
    doc = read_document(settings_file)
    theirs = b'{\n    "theirs": true\n}'

    def st_saves(stage: str) -> None:
        if stage == "tmp_written":
            settings_file.write_bytes(theirs)

    with pytest.raises(ConcurrentModification):
        write_patched(doc, [PatchEdit(PPP, "merge")], fault_hook=st_saves)
    assert settings_file.read_bytes() == theirs
    assert leftovers(settings_file.parent) == []


def test_file_deleted_since_read_is_a_conflict(settings_file: Path) -> None:
    doc = read_document(settings_file)
    settings_file.unlink()
    with pytest.raises(ConcurrentModification):
        write_patched(doc, [PatchEdit(PPP, "merge")])
    assert not settings_file.exists() and leftovers(settings_file.parent) == []


def test_read_only_file_is_left_alone(settings_file: Path) -> None:
    os.chmod(settings_file, 0o444)
    doc = read_document(settings_file)
    with pytest.raises(WriteFailed, match=r"settings\.json is read-only; it was left unchanged"):
        write_patched(doc, [PatchEdit(PPP, "merge")])
    assert settings_file.read_bytes() == SETTINGS.read_bytes()
    assert leftovers(settings_file.parent) == []


def test_read_only_folder_is_left_alone(settings_file: Path) -> None:
    folder = settings_file.parent
    doc = read_document(settings_file)
    os.chmod(folder, 0o555)
    try:
        with pytest.raises(WriteFailed, match="read-only"):
            write_patched(doc, [PatchEdit(PPP, "merge")])
        assert settings_file.read_bytes() == SETTINGS.read_bytes()
        assert leftovers(folder) == []
    finally:
        os.chmod(folder, 0o755)


def test_injected_enospc_while_writing_the_temp_file(settings_file: Path) -> None:
    def disk_full(stage: str) -> None:
        if stage == "before_replace":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    doc = read_document(settings_file)
    with pytest.raises(WriteFailed, match="not enough disk space") as info:
        write_patched(doc, [PatchEdit(PPP, "merge")], fault_hook=disk_full)
    assert info.value.errno == errno.ENOSPC
    assert settings_file.read_bytes() == SETTINGS.read_bytes()
    assert leftovers(settings_file.parent) == []


def _mount_tmpfs(target: Path, options: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root; the injected-fault test covers the same path")
    target.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here: {proc.stderr.strip()}")


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "tiny"
    _mount_tmpfs(mnt, "size=64k,mode=0755")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_real_enospc_on_a_full_tmpfs(tiny_tmpfs: Path) -> None:
    path = tiny_tmpfs / "settings.json"
    shutil.copyfile(SETTINGS, path)  # 44 KB of 64 KB: no room for the 44 KB temp file
    doc = read_document(path)
    with pytest.raises(WriteFailed, match="not enough disk space") as info:
        write_patched(doc, [PatchEdit(PPP, "merge")])
    assert info.value.errno == errno.ENOSPC
    assert path.read_bytes() == SETTINGS.read_bytes()
    assert leftovers(tiny_tmpfs) == []


def test_real_read_only_file_system(tiny_tmpfs: Path) -> None:
    path = tiny_tmpfs / "settings.json"
    path.write_text('{\n    "a": 1\n}', encoding="utf-8")
    doc = read_document(path)
    subprocess.run(["mount", "-o", "remount,ro", str(tiny_tmpfs)], check=True)
    with pytest.raises(WriteFailed, match="read-only file system") as info:
        write_patched(doc, [PatchEdit(("a",), 2)])
    assert info.value.errno == errno.EROFS
    assert path.read_text(encoding="utf-8") == '{\n    "a": 1\n}'


def test_symlinked_settings_file_is_written_through_like_st_does(tmp_path: Path) -> None:
    # write-file-atomic resolves the link, so the real file is replaced and the link stays.
    real = tmp_path / "real.json"
    shutil.copyfile(SETTINGS, real)
    link = tmp_path / "settings.json"
    link.symlink_to(real)
    write_patched(read_document(link), [PatchEdit(PPP, "merge")])
    assert link.is_symlink()
    assert (
        loads_st(real.read_text(encoding="utf-8"))["oai_settings"]["custom_prompt_post_processing"] == "merge"
    )


def test_a_5_mb_settings_file_patches_only_the_target(tmp_path: Path) -> None:
    data = loads_st(SETTINGS.read_text(encoding="utf-8"))
    data["extension_settings"]["quickReplies"] = [
        {"label": f"qr{i}", "message": "x" * 500} for i in range(9000)
    ]
    path = tmp_path / "settings.json"
    text = dumps_st(data)
    path.write_text(text, encoding="utf-8")
    assert path.stat().st_size > 5 * 1024 * 1024
    result = write_patched(
        read_document(path), [PatchEdit(PPP, "merge"), PatchEdit(("oai_settings", "function_calling"), True)]
    )
    assert [o.value for o in result.old_values] == ["single", False]
    data["oai_settings"]["custom_prompt_post_processing"] = "merge"
    data["oai_settings"]["function_calling"] = True
    assert path.read_text(encoding="utf-8") == dumps_st(data)


# --- our own files ---


def test_write_new_file_atomic_sets_mode_and_replaces_a_planted_symlink(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me", encoding="utf-8")
    target = tmp_path / "token.json"
    target.symlink_to(victim)
    write_new_file_atomic(target, b"{}", mode=0o600)
    assert not target.is_symlink() and target.read_bytes() == b"{}"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert victim.read_text(encoding="utf-8") == "keep me"
    assert leftovers(tmp_path) == []


def test_temp_names_are_recognisable() -> None:
    assert is_companion_temp(".settings.json.nanogpt-companion.a1b2c3.tmp")
    assert not is_companion_temp("settings.json")
    assert not is_companion_temp("settings.json.2876123")  # ST's own write-file-atomic temp


async def test_async_wrappers_run_off_the_loop(settings_file: Path) -> None:
    doc = await read_document_async(settings_file)
    result = await write_patched_async(doc, [PatchEdit(PPP, "merge_tools")])
    again = await read_document_async(settings_file)
    assert again.sha256 == result.new_sha256
    assert again.data["oai_settings"]["custom_prompt_post_processing"] == "merge_tools"
