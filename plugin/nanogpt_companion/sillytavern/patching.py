"""Patch values inside a JSON text without touching any other byte, then write it back safely.

Re-serialising the whole document would be simpler but rewrites every byte whenever the file's layout
differs from ours in the smallest way (a human edit, an older ST, a different number format), and it is
slow on the multi-megabyte settings files some users have. Instead each target value's exact text span
is located by walking the JSON text, skipping sibling values with the stdlib's C scanner, and only that
span is replaced by the new value laid out as ST would write it at that depth.

After splicing, the result is parsed and compared with the expected object (the original data with the
edits applied); any mismatch, e.g. a duplicated key, aborts before anything is written.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from json.scanner import make_scanner
from pathlib import Path
from typing import Any, cast

from .documents import Document, FaultHook, replace_file_atomic, sha256_hex
from .errors import PatchError
from .stjson import INDENT, decoder, dumps_st, dumps_st_compact, js_equal, loads_fast, loads_st, quote_st

logger = logging.getLogger(__name__)

PathElement = str | int
KeyPath = tuple[PathElement, ...]

_WS = re.compile(r"[ \t\n\r]*")
# The C scanner parses one value starting at an index and returns its end: siblings are skipped at C speed.
# (typeshed types make_scanner's argument wrongly, hence the casts.)
_SCAN = cast(Callable[[str, int], tuple[Any, int]], make_scanner(cast(Any, decoder())))


@dataclass(frozen=True)
class PatchEdit:
    """Set ``path`` to ``value`` (adding the key when missing), or remove the key when ``delete``."""

    path: KeyPath
    value: Any = None
    delete: bool = False


@dataclass(frozen=True)
class OldValue:
    """What was at ``path`` before the patch; ``existed`` False means the key was absent (undo deletes)."""

    path: KeyPath
    value: Any
    existed: bool


@dataclass(frozen=True)
class WriteResult:
    new_sha256: str
    old_values: tuple[OldValue, ...]
    changed: bool = True


class _Malformed(Exception):
    """The text is not where the walker expects JSON structure; turned into a PatchError by the caller."""


def _skip_ws(text: str, i: int) -> int:
    m = _WS.match(text, i)
    return i if m is None else m.end()  # never None: the pattern matches the empty string


def _value_end(text: str, i: int, layout: _Layout | None = None) -> int:
    if layout is not None and layout.fast:
        end = _pretty_container_end(text, i)
        if end is not None:
            return end
    try:
        return _SCAN(text, i)[1]
    except StopIteration:
        raise _Malformed(f"no JSON value at offset {i}") from None


def _pretty_container_end(text: str, i: int) -> int | None:
    """End of the object/array at ``i`` in JSON.stringify's indented layout, found with one ``str.find``.

    Why this is sound: in that layout a container's closing bracket is the first bracket that starts a
    line indented exactly like the line that opened it (everything inside is indented deeper), and JSON
    strings cannot hold a raw newline, so no content can fake such a line. Skipping a multi-MB sibling
    this way costs microseconds instead of parsing it. Files laid out differently may fool it; the
    caller's final self-check catches that and redoes the patch with the real scanner.
    """
    opener = text[i : i + 1]
    if opener not in ("{", "["):
        return None
    close = "}" if opener == "{" else "]"
    if text[i + 1 : i + 2] == close:
        return i + 2
    if text[i + 1 : i + 2] not in ("\n", "\r"):
        return None
    marker = "\n" + _line_indent(text, i) + close
    j = text.find(marker, i + 1)
    return None if j < 0 else j + len(marker)


def _line_indent(text: str, pos: int) -> str:
    """Leading whitespace of the line containing ``pos``: the depth ST's layout puts that value at."""
    line_start = text.rfind("\n", 0, pos) + 1
    m = _WS.match(text, line_start, pos)
    if m is None:  # never: the pattern matches the empty string
        return ""
    return text[line_start : m.end()].replace("\n", "").replace("\r", "")


@dataclass
class _Member:
    key_start: int
    value_start: int
    prev_value_end: int | None  # end of the previous member's value: where a deleted member's text begins


@dataclass
class _ObjectScan:
    member: _Member | None
    # Filled only when the whole object was scanned (key absent): where an added key goes.
    last_key_start: int | None = None
    last_value_end: int | None = None
    close: int | None = None


def _scan_object(
    text: str, start: int, key: str, layout: _Layout | None = None, *, unique: bool = False
) -> _ObjectScan:
    """Find ``key`` in the object at ``start`` (its first occurrence).

    ``unique``: keep scanning to the end of the object and refuse a second occurrence. JSON.parse keeps
    the *last* duplicate, so patching the first would silently change nothing; without this check only
    the final full re-parse would notice.
    """
    if text[start : start + 1] != "{":
        raise _Malformed("not an object")
    i = _skip_ws(text, start + 1)
    if text[i : i + 1] == "}":
        return _ObjectScan(None, close=i)
    prev_end: int | None = None
    prev_key_start: int | None = None
    found: _Member | None = None
    while True:
        if text[i : i + 1] != '"':
            raise _Malformed(f"expected a key at offset {i}")
        key_start = i
        try:
            name, i = _SCAN(text, i)
        except StopIteration:
            raise _Malformed(f"bad key at offset {key_start}") from None
        i = _skip_ws(text, i)
        if text[i : i + 1] != ":":
            raise _Malformed(f"expected ':' at offset {i}")
        value_start = _skip_ws(text, i + 1)
        if name == key:
            if found is not None:
                raise _Malformed(f"the key {key!r} is duplicated in one object (JSON.parse keeps the last)")
            found = _Member(key_start, value_start, prev_end)
            if not unique:
                return _ObjectScan(found)
        prev_end = _value_end(text, value_start, layout)
        prev_key_start = key_start
        i = _skip_ws(text, prev_end)
        c = text[i : i + 1]
        if c == ",":
            i = _skip_ws(text, i + 1)
        elif c == "}":
            if found is not None:
                return _ObjectScan(found)
            return _ObjectScan(None, last_key_start=prev_key_start, last_value_end=prev_end, close=i)
        else:
            raise _Malformed(f"expected ',' or '}}' at offset {i}")


def _array_element(text: str, start: int, index: int, layout: _Layout | None = None) -> int | None:
    if text[start : start + 1] != "[":
        raise _Malformed("not an array")
    i = _skip_ws(text, start + 1)
    if text[i : i + 1] == "]":
        return None
    n = 0
    while True:
        if n == index:
            return i
        i = _skip_ws(text, _value_end(text, i, layout))
        c = text[i : i + 1]
        if c == ",":
            i = _skip_ws(text, i + 1)
            n += 1
        elif c == "]":
            return None
        else:
            raise _Malformed(f"expected ',' or ']' at offset {i}")


class _Layout:
    """How the file lays out nested values: newline and indent unit (ST: "\\n" and four spaces)."""

    def __init__(self, text: str, *, fast: bool = True) -> None:
        self.fast = fast  # skip containers by layout (see _pretty_container_end)
        self.newline = "\r\n" if "\r\n" in text[:65536] else "\n"
        self.unit = INDENT
        # A file without line breaks was written by JSON.stringify without indentation: keep it minified.
        self.compact = "\n" not in text.strip()
        start = _skip_ws(text, 0)
        first = _skip_ws(text, start + 1) if text[start : start + 1] in ("{", "[") else start
        indent = _line_indent(text, first)
        if indent and first > start and "\n" in text[start:first]:
            self.unit = indent

    def dumps(self, value: Any, indent: str) -> str:
        if self.compact:
            return dumps_st_compact(value)
        out = dumps_st(value, indent, self.unit)
        return out if self.newline == "\n" else out.replace("\n", self.newline)


def _nest(path: Sequence[PathElement], value: Any) -> Any:
    for element in reversed(path):
        if not isinstance(element, str):
            raise TypeError("cannot create an array element")
        value = {element: value}
    return value


def _splice_one(text: str, edit: PatchEdit, layout: _Layout, old: Any = None) -> tuple[str, bool]:
    """Apply one edit to ``text``; unchanged text when deleting something that is not there.

    Returns the new text and whether the edit verified itself: a replaced value whose old text was
    parsed back and found equal to ``old`` (the value the parsed document holds there), in objects whose
    keys on the path were checked unique. Such an edit cannot have landed anywhere else, so the caller may
    skip re-parsing the whole file.
    """
    path = edit.path
    if not path:
        raise _Malformed("empty path: the whole document cannot be patched")
    pos = _skip_ws(text, 0)
    for depth, element in enumerate(path):
        last = depth == len(path) - 1
        if isinstance(element, bool) or not isinstance(element, str | int):
            raise _Malformed(f"path element {element!r} is neither a key nor an index")
        if isinstance(element, int):
            found = _array_element(text, pos, element, layout) if element >= 0 else None
            if found is None:
                if edit.delete:
                    return text, False
                raise _Malformed(f"array index {element} out of range (arrays are not extended)")
            if last:
                if edit.delete:
                    raise _Malformed("deleting array elements is not supported")
                end = _value_end(text, found, layout)
                verified = _span_holds(text, found, end, old)
                return text[:found] + layout.dumps(edit.value, _line_indent(text, found)) + text[
                    end:
                ], verified
            pos = found
            continue
        scan = _scan_object(text, pos, element, layout, unique=True)
        member = scan.member
        if member is None:
            if edit.delete:
                return text, False
            inserted = _insert_member(
                text, pos, scan, key=element, value=_nest(path[depth + 1 :], edit.value), layout=layout
            )
            return inserted, False
        if not last:
            pos = member.value_start
            continue
        end = _value_end(text, member.value_start, layout)
        if not edit.delete:
            indent = _line_indent(text, member.value_start)
            verified = _span_holds(text, member.value_start, end, old)
            return text[: member.value_start] + layout.dumps(edit.value, indent) + text[end:], verified
        return _delete_member(text, pos, member, end), False
    raise AssertionError("unreachable")


def _span_holds(text: str, start: int, end: int, old: Any) -> bool:
    """Does ``text[start:end]`` parse to exactly ``old``? Proves the span located is the value's."""
    if old is _MISSING:
        return False
    try:
        return js_equal(loads_fast(text[start:end]), old)
    except ValueError:
        return False


def _insert_member(
    text: str, obj_start: int, scan: _ObjectScan, *, key: str, value: Any, layout: _Layout
) -> str:
    # Checks, not asserts: the service runs with -OO, and a wrong offset here would write a wrong file.
    if scan.close is None:
        raise _Malformed("object not closed")
    if scan.last_value_end is None:
        # Empty object (possibly "{ }"): ST writes a one-key object fully expanded.
        indent = _line_indent(text, obj_start)
        return text[:obj_start] + layout.dumps({key: value}, indent) + text[scan.close + 1 :]
    if scan.last_key_start is None:
        raise _Malformed("a value without a key")
    line_start = text.rfind("\n", 0, scan.last_key_start) + 1
    own_line = line_start > obj_start and not text[line_start : scan.last_key_start].strip(" \t\r")
    indent = _line_indent(text, scan.last_key_start) if own_line else ""
    if layout.compact:
        addition = "," + quote_st(key) + ":" + layout.dumps(value, indent)
    else:
        sep = layout.newline + indent if own_line else " "
        addition = "," + sep + quote_st(key) + ": " + layout.dumps(value, indent)
    return text[: scan.last_value_end] + addition + text[scan.last_value_end :]


def _delete_member(text: str, obj_start: int, member: _Member, value_end: int) -> str:
    if member.prev_value_end is not None:
        # Remove ",<ws>"key": value": what follows (next member or the closing brace) stays as it was.
        return text[: member.prev_value_end] + text[value_end:]
    j = _skip_ws(text, value_end)
    if text[j : j + 1] == ",":
        next_key = _skip_ws(text, j + 1)
        return text[: member.key_start] + text[next_key:]
    if text[j : j + 1] == "}":
        return text[:obj_start] + "{}" + text[j + 1 :]
    raise _Malformed(f"expected ',' or '}}' at offset {j}")


_MISSING = object()


def _get(data: Any, path: KeyPath) -> Any:
    cur = data
    for element in path:
        in_dict = isinstance(element, str) and isinstance(cur, dict) and element in cur
        in_list = isinstance(element, int) and isinstance(cur, list) and 0 <= element < len(cur)
        if in_dict or in_list:
            cur = cur[element]
        else:
            return _MISSING
    return cur


def _applied(data: Any, path: KeyPath, edit: PatchEdit) -> Any:
    """``data`` with the edit applied, copying only the containers on the path (the rest is shared)."""
    element = path[0]
    rest = path[1:]
    if isinstance(element, int):
        if not isinstance(data, list) or not 0 <= element < len(data):
            if edit.delete:
                return data
            raise PatchError(Path("."), f"array index {element} out of range")
        new_list = list(data)
        new_list[element] = _applied(data[element], rest, edit) if rest else edit.value
        return new_list
    if not isinstance(data, dict):
        raise PatchError(Path("."), f"cannot set key {element!r}: the value on the path is not an object")
    new_dict = dict(data)
    if not rest:
        if edit.delete:
            new_dict.pop(element, None)
        else:
            new_dict[element] = edit.value
        return new_dict
    if element not in data:
        if edit.delete:
            return data
        new_dict[element] = _nest(rest, edit.value)
        return new_dict
    new_dict[element] = _applied(data[element], rest, edit)
    return new_dict


def _patch(text: str, data: Any, ops: Sequence[PatchEdit], path_for_errors: Path) -> tuple[str, Any]:
    try:
        return _patch_with(text, data, ops, path_for_errors, _Layout(text, fast=True))
    except PatchError:
        # The layout shortcut can only be fooled by files not laid out like ST's; the exact scanner decides.
        return _patch_with(text, data, ops, path_for_errors, _Layout(text, fast=False))


def _patch_with(
    text: str, data: Any, ops: Sequence[PatchEdit], path_for_errors: Path, layout: _Layout
) -> tuple[str, Any]:
    expected = data
    all_verified = True
    for edit in ops:
        if not edit.path:
            raise PatchError(path_for_errors, "an edit needs a non-empty key path")
        old = _get(expected, tuple(edit.path))
        try:
            expected = _applied(expected, tuple(edit.path), edit)
        except PatchError as exc:
            raise PatchError(path_for_errors, f"{exc.reason} (path {list(edit.path)})") from None
        try:
            text, verified = _splice_one(text, edit, layout, old)
        except _Malformed as exc:
            raise PatchError(path_for_errors, f"cannot patch {list(edit.path)}: {exc}") from None
        all_verified = all_verified and verified
    if all_verified:
        # Every edit replaced a span proven to hold the old value, under unique keys: the rest of the
        # text is the original, which parsed to ``data``. Re-parsing megabytes would prove nothing more.
        return text, expected
    try:
        result = loads_fast(text.encode("utf-8", "surrogatepass"))
    except ValueError:
        raise PatchError(
            path_for_errors, "internal check failed: the patched text is not valid JSON"
        ) from None
    if result != expected and not js_equal(result, expected):
        raise PatchError(
            path_for_errors,
            "internal check failed: the patched file would not hold the intended values "
            "(is a key duplicated in the file?); nothing was written",
        )
    return text, expected


def apply_patch_text(text: str, ops: Sequence[PatchEdit]) -> str:
    """``text`` with each edit applied in order; every byte outside the edited values is kept."""
    try:
        data = loads_st(text)
    except ValueError as exc:
        raise PatchError(Path("."), f"the document is not valid JSON: {exc}") from None
    return _patch(text, data, ops, Path("."))[0]


def old_values(data: Any, ops: Sequence[PatchEdit]) -> tuple[OldValue, ...]:
    """The values each edit will overwrite, as seen in ``data`` before any edit (for the journal / undo)."""
    out = []
    for edit in ops:
        value = _get(data, tuple(edit.path))
        out.append(OldValue(tuple(edit.path), None if value is _MISSING else value, value is not _MISSING))
    return tuple(out)


def undo_edits(olds: Sequence[OldValue]) -> list[PatchEdit]:
    """Edits that restore what ``old_values`` recorded: keys we added are removed again."""
    return [PatchEdit(o.path, o.value, delete=not o.existed) for o in reversed(olds)]


def patched_text(doc: Document, ops: Sequence[PatchEdit]) -> str:
    return _patch(doc.text, doc.data, ops, doc.path)[0]


def write_patched(
    doc: Document,
    ops: Sequence[PatchEdit],
    *,
    within: Path | None = None,
    fault_hook: FaultHook | None = None,
) -> WriteResult:
    """Apply ``ops`` to the file ``doc`` was read from, only if it still holds exactly ``doc.raw``.

    Raises ``ConcurrentModification`` (file changed since ``doc`` was read: nothing written),
    ``WriteFailed`` (read-only, no space, a link out of ``within``...: original untouched, no temp file
    left) or ``PatchError``.
    """
    olds = old_values(doc.data, ops)
    new_text = patched_text(doc, ops)
    new_raw = new_text.encode("utf-8")
    if new_raw == doc.raw:
        return WriteResult(doc.sha256, olds, changed=False)
    replace_file_atomic(doc.path, new_raw, expected_sha256=doc.sha256, within=within, fault_hook=fault_hook)
    logger.info("patched %s: %s", doc.path, ", ".join(".".join(map(str, e.path)) for e in ops))
    return WriteResult(sha256_hex(new_raw), olds)


async def write_patched_async(
    doc: Document,
    ops: Sequence[PatchEdit],
    *,
    within: Path | None = None,
    fault_hook: FaultHook | None = None,
) -> WriteResult:
    return await asyncio.to_thread(write_patched, doc, ops, within=within, fault_hook=fault_hook)


def expected_data(data: Any, ops: Sequence[PatchEdit]) -> Any:
    """The parsed document after ``ops`` (without touching text); useful to predict a patch's result."""
    for edit in ops:
        data = _applied(data, tuple(edit.path), edit)
    return data


__all__ = [
    "KeyPath",
    "OldValue",
    "PatchEdit",
    "WriteResult",
    "apply_patch_text",
    "expected_data",
    "old_values",
    "patched_text",
    "undo_edits",
    "write_patched",
    "write_patched_async",
]
