"""Installs the ST UI extension (and optionally the ST server plugin) into a SillyTavern install.

Everything here works on the file system only, so the CLI stays a thin wrapper and the tests can run every
mode against a real temporary ST folder. The rules that shape it:

* An install is replaced as a whole: the new copy is built next to the target and swapped in by rename, so ST
  never serves a half-copied extension and an interrupted run leaves the old copy in place.
* A folder is only touched when it is ours (our manifest, our plugin package, or our install record); anything
  else with the same name belongs to someone and is refused unless ``force`` is given.
* Each copy carries an install record listing the files we put there, so uninstall removes exactly those.
* A re-run that would put the same bytes in place changes nothing (and says so): no rename, no new record.
* Without ``--user``/``--global`` the extension goes where it already is, else to ST's default user, else (ST
  never started, so no user folder exists yet) to ST's global third-party folder, which ST serves to every
  user, including those it creates later. A user's own copy wins over the global one in ST
  (``src/users.js``, ``createExtensionsRouteHandler``; ``/api/extensions/discover`` drops the global entry of
  the same name), so every existing copy is updated, never just one of them.
* ``config.yaml`` is edited textually (one line), never re-dumped: ST's config is full of comments users read.
"""

from __future__ import annotations

import contextlib
import filecmp
import json
import logging
import os
import re
import secrets
import shlex
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from nanogpt_companion.autostart import serve_command, service_log_path
from nanogpt_companion.config import DEFAULT_PORT
from nanogpt_companion.plugin_link import (
    Autostart,
    ServiceLink,
    link_path,
    new_secret,
    read_link,
    write_link,
)

logger = logging.getLogger(__name__)

EXTENSION_FOLDER = "nanogpt-companion"
PLUGIN_FOLDER = "nanogpt-companion"
DISPLAY_NAME = "NanoGPT Companion"
PLUGIN_PACKAGE_NAME = "sillytavern-nanogpt-companion-plugin"
INSTALL_RECORD = ".nanogpt-companion-install.json"
DEFAULT_USER = "default-user"
RELOAD_LINE = "Reload SillyTavern in your browser."
FIRST_START_LINE = "Start SillyTavern: it loads the extension on its first start."
CONFIG_KEY = "enableServerPlugins"

# Never part of an install, whatever a development checkout contains.
_IGNORED_NAMES = frozenset({".git", "node_modules", "__pycache__", ".DS_Store", INSTALL_RECORD})
_IGNORED_SUFFIXES = (".pyc", ".swp", "~")
# ST's own handle rule is lowercase letters, digits and dashes; anything else here could escape the data root.
_HANDLE_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_CONFIG_LINE_RE = re.compile(
    r"^(?P<prefix>"
    + CONFIG_KEY
    + r"[ \t]*:[ \t]*)(?P<value>[^#\r\n]*?)(?P<rest>[ \t]*(?:#[^\r\n]*)?)(?P<eol>\r?\n?)$"
)

Action = Literal["installed", "updated", "unchanged", "uninstalled", "absent"]
OwnershipCheck = Callable[[Path], bool]


class InstallError(Exception):
    """A refusal or failure with a message meant for the user (the CLI prints it and exits non-zero)."""


@dataclass(frozen=True)
class ComponentResult:
    """What happened to one installed folder."""

    name: str
    path: Path
    action: Action
    mode: Literal["copy", "link"] | None
    kept_files: tuple[str, ...] = ()


@dataclass
class InstallReport:
    """The outcome, with ``lines`` ready for the CLI to print in order."""

    lines: list[str] = field(default_factory=list)
    components: list[ComponentResult] = field(default_factory=list)
    server_plugins_enabled: bool | None = None
    config_changed: bool = False
    config_backup: Path | None = None
    service_link: Path | None = None

    def component(self, name: str) -> ComponentResult | None:
        return next((c for c in self.components if c.name == name), None)


@dataclass(frozen=True)
class _Layout:
    st_dir: Path
    config_path: Path
    config: dict[str, Any]


# --------------------------------------------------------------------------------------------------- sources


def find_extension_source() -> Path:
    """The extension files shipped in the wheel or, in a checkout, the repo's ``st-extension/``."""
    return _find_source("_st_extension", Path("st-extension"), _is_our_extension)


def find_server_plugin_source() -> Path:
    """The server plugin shipped with this package (wheel) or, in a checkout, ``plugin/st-server-plugin/``."""
    return _find_source("_st_server_plugin", Path("plugin") / "st-server-plugin", _is_our_plugin)


def _find_source(package_data: str, repo_relative: Path, check: OwnershipCheck) -> Path:
    package_dir = Path(__file__).resolve().parent
    candidates = [package_dir / package_data, package_dir.parents[1] / repo_relative]
    for candidate in candidates:
        if candidate.is_dir() and check(candidate):
            return candidate
    raise InstallError(
        f"Cannot find the files to install (looked in {', '.join(str(c) for c in candidates)}). "
        "Reinstall nanogpt-companion or pass the source folder explicitly."
    )


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _is_our_extension(folder: Path) -> bool:
    manifest = _read_json(folder / "manifest.json")
    return isinstance(manifest, dict) and manifest.get("display_name") == DISPLAY_NAME


def _is_our_plugin(folder: Path) -> bool:
    package = _read_json(folder / "package.json")
    return isinstance(package, dict) and package.get("name") == PLUGIN_PACKAGE_NAME


def _install_record(folder: Path) -> dict[str, Any] | None:
    record = _read_json(folder / INSTALL_RECORD)
    if isinstance(record, dict) and record.get("installer") == "nanogpt-companion":
        return record
    return None


# ---------------------------------------------------------------------------------------------- ST layout


def _load_layout(st_dir: Path) -> _Layout:
    st_dir = st_dir.expanduser().resolve()
    if not st_dir.is_dir():
        raise InstallError(
            f"{st_dir} is not a folder. Pass the SillyTavern folder (the one with config.yaml)."
        )
    config_path = st_dir / "config.yaml"
    config: dict[str, Any] = {}
    if config_path.is_file():
        try:
            loaded = yaml.safe_load(config_path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise InstallError(
                f"Cannot read {config_path}: {exc.__class__.__name__}. Fix the file first."
            ) from None
        if loaded is not None and not isinstance(loaded, dict):
            raise InstallError(f"{config_path} does not contain a YAML mapping.")
        config = loaded or {}
    elif not (st_dir / "public").is_dir() and not (st_dir / "data").is_dir():
        raise InstallError(
            f"{st_dir} does not look like a SillyTavern folder (no config.yaml, public/ or data/)."
        )
    return _Layout(st_dir=st_dir, config_path=config_path, config=config)


def st_data_root(st_dir: Path) -> Path:
    """ST's data root: ``dataRoot`` from config.yaml (relative to the ST folder), default ``./data``."""
    layout = _load_layout(st_dir)
    return _data_root(layout)


def _data_root(layout: _Layout) -> Path:
    raw = layout.config.get("dataRoot") or "./data"
    root = Path(str(raw)).expanduser()
    return root if root.is_absolute() else (layout.st_dir / root)


def _list_users(data_root: Path) -> list[str]:
    if not data_root.is_dir():
        return []
    return sorted(
        p.name
        for p in data_root.iterdir()
        if p.is_dir() and not p.name.startswith(("_", ".")) and _HANDLE_RE.match(p.name)
    )


def _global_target(layout: _Layout) -> Path:
    extensions = layout.st_dir / "public" / "scripts" / "extensions"
    if not extensions.is_dir():
        raise InstallError(f"{extensions} does not exist; a global install needs a full SillyTavern folder.")
    return extensions / "third-party" / EXTENSION_FOLDER


def _missing_user_error(data_root: Path, handle: str) -> InstallError:
    known = _list_users(data_root)
    hint = (
        f"Known users: {', '.join(known)}. Pass --user HANDLE, or --global to install for every user."
        if known
        else "Start SillyTavern once so it creates its user folders, or pass --global."
    )
    return InstallError(f"SillyTavern user {handle!r} has no folder at {data_root / handle}. {hint}")


def _extension_target(layout: _Layout, user: str | None, global_install: bool) -> Path:
    if global_install:
        if user is not None:
            raise InstallError("Choose either --user or --global, not both.")
        return _global_target(layout)
    handle = user or DEFAULT_USER
    if not _HANDLE_RE.match(handle):
        raise InstallError(f"{handle!r} is not a SillyTavern user handle.")
    data_root = _data_root(layout)
    user_dir = data_root / handle
    if not user_dir.is_dir():
        raise _missing_user_error(data_root, handle)
    return user_dir / "extensions" / EXTENSION_FOLDER


@dataclass(frozen=True)
class _Targets:
    paths: list[Path]
    first_start: bool = False  # ST has no user folder yet: the install waits for its first start


def _extension_targets(
    layout: _Layout, user: str | None, global_install: bool, *, uninstall: bool
) -> _Targets:
    """Where the extension goes (or is removed from).

    An explicit ``--user``/``--global`` is taken literally. Otherwise every copy of ours among the default
    user's folder and the global folder is updated (or removed); with none, the default user gets it; and an
    ST that never started (no user folder at all) gets a global install, so its first page load already has
    the extension and users created later get it too.
    """
    if user is not None or global_install:
        return _Targets([_extension_target(layout, user, global_install)])
    data_root = _data_root(layout)
    user_target = data_root / DEFAULT_USER / "extensions" / EXTENSION_FOLDER
    candidates = [user_target]
    with contextlib.suppress(InstallError):
        candidates.append(_global_target(layout))
    ours = [t for t in candidates if _ownership(t, _is_our_extension) == "ours"]
    if ours:
        return _Targets(ours)
    if (data_root / DEFAULT_USER).is_dir() or uninstall:
        return _Targets([user_target])
    if not _list_users(data_root):
        return _Targets([_global_target(layout)], first_start=True)
    raise _missing_user_error(data_root, DEFAULT_USER)


# ------------------------------------------------------------------------------------------ copy and swap


def _source_files(source: Path) -> list[str]:
    """Relative POSIX paths of every file to install, in a stable order."""
    files: list[str] = []
    for dirpath, dirnames, filenames in os.walk(source):
        dirnames[:] = sorted(d for d in dirnames if d not in _IGNORED_NAMES)
        for name in sorted(filenames):
            if name in _IGNORED_NAMES or name.endswith(_IGNORED_SUFFIXES):
                continue
            files.append((Path(dirpath) / name).relative_to(source).as_posix())
    return files


def _ownership(target: Path, is_ours: OwnershipCheck) -> Literal["missing", "ours", "foreign"]:
    if target.is_symlink():
        # A dangling link we made earlier (the checkout moved) is still ours to replace or remove.
        resolved = Path(os.path.realpath(target))
        return "ours" if (not resolved.exists() or is_ours(resolved)) else "foreign"
    if not target.exists():
        return "missing"
    if target.is_dir() and (_install_record(target) is not None or is_ours(target)):
        return "ours"
    if target.is_dir() and not any(p.is_file() or p.is_symlink() for p in target.rglob("*")):
        # Only empty folders left (e.g. by an uninstall that kept a user file): nothing to lose.
        return "missing"
    return "foreign"


def _unique_sibling(target: Path, tag: str) -> Path:
    return target.with_name(f".{target.name}.{tag}-{secrets.token_hex(4)}")


def _remove_path(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


def _swap_in(staged: Path, target: Path) -> None:
    """Puts ``staged`` at ``target``; whatever was there is moved aside first and deleted only afterwards."""
    if not (target.exists() or target.is_symlink()):
        os.replace(staged, target)
        return
    aside = _unique_sibling(target, "old")
    os.replace(target, aside)
    try:
        os.replace(staged, target)
    except OSError:
        os.replace(aside, target)
        raise
    _remove_path(aside)


def _stage_copy(source: Path, target: Path, name: str) -> tuple[Path, tuple[str, ...]]:
    """Builds the new copy beside the target (same file system, so the final rename is atomic)."""
    files = _source_files(source)
    if not files:
        raise InstallError(f"{source} is empty; nothing to install.")
    staged = _unique_sibling(target, "new")
    staged.mkdir()
    try:
        for rel in files:
            dest = staged / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source / rel, dest)
        kept = _carry_over_foreign_files(target, staged, set(files))
        record = {
            "installer": "nanogpt-companion",
            "component": name,
            "source": str(source),
            "installed_at": int(time.time()),
            "files": files,
        }
        (staged / INSTALL_RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    return staged, kept


def _carry_over_foreign_files(target: Path, staged: Path, new_files: set[str]) -> tuple[str, ...]:
    """Files the user added to an installed copy survive an update: only what we installed is ours."""
    if target.is_symlink() or not target.is_dir():
        return ()
    record = _install_record(target)
    if record is None:
        return ()
    ours = set(record.get("files") or [])
    kept: list[str] = []
    for rel in _source_files(target):
        if rel in ours or rel in new_files:
            continue
        dest = staged / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(target / rel, dest)
        kept.append(rel)
    return tuple(kept)


def _install_folder(
    name: str, source: Path, target: Path, is_ours: OwnershipCheck, *, link: bool, force: bool, label: str
) -> ComponentResult:
    source = source.resolve()
    if not is_ours(source):
        raise InstallError(
            f"{source} is not the {label} (its manifest/package does not match); refusing to install it."
        )
    state = _ownership(target, is_ours)
    if state == "foreign" and not force:
        raise InstallError(
            f"{target} already exists and is not a {DISPLAY_NAME} install. "
            "Move it away, or pass --force to replace it."
        )
    if state == "ours" and _already_in_place(source, target, link=link):
        return ComponentResult(name=name, path=target, action="unchanged", mode="link" if link else "copy")
    target.parent.mkdir(parents=True, exist_ok=True)
    if link:
        staged = _unique_sibling(target, "new")
        staged.symlink_to(source, target_is_directory=True)
        kept: tuple[str, ...] = ()
    else:
        staged, kept = _stage_copy(source, target, name)
    try:
        _swap_in(staged, target)
    except OSError as exc:
        _remove_path(staged)
        raise InstallError(f"Could not put the new files at {target}: {exc.strerror or exc}.") from None
    action: Action = "installed" if state == "missing" else "updated"
    logger.info("%s %s at %s (%s)", action, name, target, "link" if link else "copy")
    return ComponentResult(
        name=name, path=target, action=action, mode="link" if link else "copy", kept_files=kept
    )


def _already_in_place(source: Path, target: Path, *, link: bool) -> bool:
    """Would installing put exactly what is there now? (Then nothing is rewritten and ST sees no change.)"""
    if link:
        return target.is_symlink() and Path(os.path.realpath(target)) == source
    if target.is_symlink() or not target.is_dir():
        return False
    record = _install_record(target)
    files = _source_files(source)
    if record is None or record.get("files") != files:
        return False
    return all(
        (target / rel).is_file() and filecmp.cmp(source / rel, target / rel, shallow=False) for rel in files
    )


def _uninstall_folder(name: str, target: Path, is_ours: OwnershipCheck, *, force: bool) -> ComponentResult:
    state = _ownership(target, is_ours)
    if state == "missing":
        return ComponentResult(name=name, path=target, action="absent", mode=None)
    if state == "foreign" and not force:
        raise InstallError(f"{target} is not a {DISPLAY_NAME} install; leaving it alone.")
    if target.is_symlink():
        target.unlink()
        return ComponentResult(name=name, path=target, action="uninstalled", mode="link")
    record = _install_record(target)
    if record is None:
        # Ours by manifest but without a record (copied by hand or by git): the whole folder is the install.
        shutil.rmtree(target)
        return ComponentResult(name=name, path=target, action="uninstalled", mode="copy")
    for rel in record.get("files") or []:
        path = (target / rel).resolve()
        if target.resolve() in path.parents and (path.is_file() or path.is_symlink()):
            path.unlink()
    (target / INSTALL_RECORD).unlink()
    _prune_empty_dirs(target)
    kept = tuple(_source_files(target)) if target.exists() else ()
    return ComponentResult(name=name, path=target, action="uninstalled", mode="copy", kept_files=kept)


def _prune_empty_dirs(root: Path) -> None:
    for dirpath, _dirnames, _filenames in sorted(os.walk(root, topdown=False), key=lambda t: -len(t[0])):
        path = Path(dirpath)
        if not any(path.iterdir()):
            path.rmdir()


# ---------------------------------------------------------------------------------------------- config.yaml


def server_plugins_enabled(config: dict[str, Any]) -> bool:
    """ST reads the key as a boolean; only a real YAML ``true`` turns plugins on."""
    return config.get(CONFIG_KEY) is True


def enable_server_plugins_in_config(config_path: Path) -> Path | None:
    """Sets ``enableServerPlugins: true`` by editing that one line; returns the backup, or None if already on.

    Every other byte stays as it was (comments, ordering, quoting, line endings). The result is re-parsed and
    compared with the original, so a surprising file layout can never turn into a silently different config.
    """
    raw = config_path.read_bytes()
    text = raw.decode("utf-8")
    before = yaml.safe_load(text) or {}
    if not isinstance(before, dict):
        raise InstallError(f"{config_path} does not contain a YAML mapping.")
    if server_plugins_enabled(before):
        return None
    lines = text.splitlines(keepends=True)
    hits = [i for i, line in enumerate(lines) if _CONFIG_LINE_RE.match(line)]
    if len(hits) > 1:
        raise InstallError(f"{config_path} sets {CONFIG_KEY} more than once; edit it by hand.")
    if hits:
        match = _CONFIG_LINE_RE.match(lines[hits[0]])
        if match is None:  # never: the line was found by this pattern
            raise InstallError(f"{config_path}: could not read its {CONFIG_KEY} line; edit it by hand.")
        rest = match.group("rest")
        # "key: #comment" parses as null; keep a space between the new value and the comment.
        if rest and not rest[0].isspace():
            rest = " " + rest
        prefix = match.group("prefix")
        if not prefix[-1].isspace():
            prefix += " "  # "key:true" would be one plain scalar, not a key with a value
        lines[hits[0]] = f"{prefix}true{rest}{match.group('eol')}"
        new_text = "".join(lines)
    else:
        eol = "\r\n" if "\r\n" in text else "\n"
        new_text = (
            text + ("" if text.endswith(("\n", "\r")) or not text else eol) + f"{CONFIG_KEY}: true{eol}"
        )
    try:
        after = yaml.safe_load(new_text) or {}
    except yaml.YAMLError:
        after = None
    expected = {**before, CONFIG_KEY: True}
    if after != expected:
        raise InstallError(
            f"Could not change {CONFIG_KEY} in {config_path} without touching other settings; "
            f"set '{CONFIG_KEY}: true' by hand."
        )
    backup = _backup_path(config_path)
    shutil.copy2(config_path, backup)
    tmp = config_path.with_name(f".{config_path.name}.tmp-{secrets.token_hex(4)}")
    try:
        tmp.write_bytes(new_text.encode("utf-8"))
        shutil.copymode(config_path, tmp)
        os.replace(tmp, config_path)
    finally:
        if tmp.exists():
            tmp.unlink()
    logger.info("set %s in %s (backup %s)", CONFIG_KEY, config_path, backup)
    return backup


def _backup_path(config_path: Path) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    candidate = config_path.with_name(f"{config_path.name}.bak-{stamp}")
    counter = 1
    while candidate.exists():
        counter += 1
        candidate = config_path.with_name(f"{config_path.name}.bak-{stamp}-{counter}")
    return candidate


# -------------------------------------------------------------------------------------------- entry point


def install_extension(
    st_dir: Path,
    *,
    user: str | None = None,
    global_install: bool = False,
    link: bool = False,
    uninstall: bool = False,
    server_plugin: bool = False,
    enable_server_plugins: bool = False,
    source_dir: Path | None = None,
    plugin_source_dir: Path | None = None,
    force: bool = False,
    autostart: bool = True,
    state_dir: Path | None = None,
    service_port: int = DEFAULT_PORT,
) -> InstallReport:
    """Installs, updates (re-run) or removes the extension, and with ``server_plugin`` the ST server plugin.

    With the plugin comes its link file (``plugin_link``): where the service listens, the secret it proves
    itself with, and, unless ``autostart`` is False, the command line the plugin starts the service with
    when ST starts (logging to ``<state_dir>/service.log``). ``service_port`` is where a new link expects
    the service until the service itself says otherwise.

    Raises InstallError with a user-facing message on any refusal; nothing is changed in that case except when
    the failure happens after an earlier component was already done (the message says which).
    """
    layout = _load_layout(st_dir)
    report = InstallReport()
    targets = _extension_targets(layout, user, global_install, uninstall=uninstall)
    plugin_target = layout.st_dir / "plugins" / PLUGIN_FOLDER

    if uninstall:
        for ext_target in targets.paths:
            ext = _uninstall_folder("extension", ext_target, _is_our_extension, force=force)
            report.components.append(ext)
            report.lines.append(_describe(ext, "The extension"))
        if server_plugin:
            plug = _uninstall_folder("server-plugin", plugin_target, _is_our_plugin, force=force)
            report.components.append(plug)
            report.lines.append(_describe(plug, "The server plugin"))
            link_file = link_path(layout.st_dir)
            if read_link(link_file) is not None:
                link_file.unlink()
                report.lines.append(f"Removed the plugin's link to the service ({link_file}).")
            if plug.action == "uninstalled":
                report.lines.append("Restart SillyTavern so it unloads the server plugin.")
        elif _ownership(plugin_target, _is_our_plugin) == "ours":
            report.lines.append(
                f"The server plugin is still installed at {plugin_target}; "
                "add --server-plugin to remove it too."
            )
        if any(c.action == "uninstalled" for c in report.components):
            report.lines.append(RELOAD_LINE)
        return report

    ext_source = source_dir if source_dir is not None else find_extension_source()
    plugin_source: Path | None = None
    if server_plugin:
        # Check both sources before touching anything, so a bad plugin source cannot leave half an install.
        plugin_source = plugin_source_dir if plugin_source_dir is not None else find_server_plugin_source()
        if not _is_our_plugin(plugin_source.resolve()):
            raise InstallError(
                f"{plugin_source} is not the {DISPLAY_NAME} server plugin; refusing to install it."
            )
        if _ownership(plugin_target, _is_our_plugin) == "foreign" and not force:
            raise InstallError(
                f"{plugin_target} already exists and is not the {DISPLAY_NAME} server plugin. "
                "Move it away, or pass --force to replace it."
            )

    if targets.first_start:
        report.lines.append(
            "SillyTavern has not created its user folders yet (it does on its first start), so the "
            "extension is installed for every user."
        )
    for ext_target in targets.paths:
        ext = _install_folder(
            "extension",
            ext_source,
            ext_target,
            _is_our_extension,
            link=link,
            force=force,
            label="NanoGPT Companion extension",
        )
        report.components.append(ext)
        report.lines.append(_describe(ext, "The extension"))

    if plugin_source is not None:
        plug = _install_folder(
            "server-plugin",
            plugin_source,
            plugin_target,
            _is_our_plugin,
            link=link,
            force=force,
            label="server plugin",
        )
        report.components.append(plug)
        report.lines.append(_describe(plug, "The server plugin"))
        _write_service_link(
            layout, report, autostart=autostart, log=service_log_path(state_dir), port=service_port
        )
        _handle_server_plugin_config(
            layout, report, enable=enable_server_plugins, plugin_changed=plug.action != "unchanged"
        )
    elif enable_server_plugins:
        _handle_server_plugin_config(layout, report, enable=True, plugin_changed=False)

    if targets.first_start:
        report.lines.append(FIRST_START_LINE)
    elif any(c.action != "unchanged" for c in report.components):
        report.lines.append(RELOAD_LINE)
    return report


def _write_service_link(
    layout: _Layout, report: InstallReport, *, autostart: bool, log: Path, port: int
) -> None:
    """Records where the service is and how to start it, beside the plugin (no ST user can write there).

    An existing file keeps its secret and address: a running service already proves itself with that
    secret, and ``serve`` keeps the address current.
    """
    path = link_path(layout.st_dir)
    current = read_link(path)
    start = Autostart(command=serve_command(layout.st_dir), log=str(log)) if autostart else None
    link = ServiceLink(
        url=current.url if current is not None else f"http://127.0.0.1:{port}",
        secret=current.secret if current is not None else new_secret(),
        autostart=start,
    )
    if link != current:
        try:
            write_link(path, link)
        except OSError as exc:
            raise InstallError(f"Could not write {path}: {exc.strerror or exc}.") from None
    report.service_link = path
    if start is None:
        report.lines.append(
            "SillyTavern will not start the service (--no-autostart): keep it running yourself "
            "(nanogpt-companion install-service, or ./scripts/start)."
        )
    else:
        report.lines.append(
            "SillyTavern will start the service when it starts (unless it already runs) and stop it when "
            f"it stops, with: {shlex.join(start.command)} (log: {log})."
        )


def _handle_server_plugin_config(
    layout: _Layout, report: InstallReport, *, enable: bool, plugin_changed: bool
) -> None:
    enabled = server_plugins_enabled(layout.config)
    if enabled:
        report.server_plugins_enabled = True
        restart = " Restart SillyTavern to load the plugin." if plugin_changed else ""
        report.lines.append(f"Server plugins are enabled in config.yaml.{restart}")
        return
    if not enable:
        report.server_plugins_enabled = False
        report.lines.extend(
            [
                f"Server plugins are off in SillyTavern ({CONFIG_KEY}: false). To turn them on, either:",
                f"  - set '{CONFIG_KEY}: true' in {layout.config_path}, or",
                "  - start SillyTavern with the environment variable "
                "SILLYTAVERN_ENABLESERVERPLUGINS=true, or",
                "  - re-run this command with --enable-server-plugins.",
                "Then restart SillyTavern.",
            ]
        )
        return
    if not layout.config_path.is_file():
        report.server_plugins_enabled = False
        report.lines.append(
            f"{layout.config_path} does not exist yet: start SillyTavern once so it creates it, then re-run "
            "with --enable-server-plugins (or set SILLYTAVERN_ENABLESERVERPLUGINS=true)."
        )
        return
    backup = enable_server_plugins_in_config(layout.config_path)
    report.server_plugins_enabled = True
    report.config_changed = backup is not None
    report.config_backup = backup
    report.lines.append(f"Turned on {CONFIG_KEY} in {layout.config_path} (backup: {backup}).")
    report.lines.append("Restart SillyTavern to load the server plugin.")


def _describe(result: ComponentResult, what: str) -> str:
    how = " (linked to your checkout)" if result.mode == "link" else ""
    kept = _kept_note(result.kept_files)
    if result.action == "installed":
        return f"{what} is installed at {result.path}{how}."
    if result.action == "updated":
        return f"{what} at {result.path} is updated{how}.{kept}"
    if result.action == "unchanged":
        return f"{what} at {result.path} is already up to date{how}; nothing changed."
    if result.action == "uninstalled":
        return f"{what} is removed from {result.path}.{kept}"
    return f"{what} is not installed at {result.path}; nothing to remove."


def _kept_note(files: Iterable[str]) -> str:
    kept = list(files)
    if not kept:
        return ""
    more = " ..." if len(kept) > 5 else ""
    return f" Kept {len(kept)} file(s) that were not installed by us: {', '.join(kept[:5])}{more}."
