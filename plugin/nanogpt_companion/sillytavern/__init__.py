"""The ST data root: users, settings.json / presets / secrets, and safe patching of ST's files.

Everything here treats ST's files as the user's data: reads tolerate half-written files, writes are
compare-and-swap + atomic rename and change no byte outside the patched values.
"""

from .dataroot import STConfig, UserPaths, discover_users, find_user, is_safe_handle, read_st_config
from .documents import (
    Document,
    is_companion_temp,
    read_document,
    read_document_async,
    replace_file_atomic,
    write_new_file_atomic,
)
from .errors import (
    ConcurrentModification,
    ConfigUnreadable,
    DocumentMissing,
    DocumentTooLarge,
    DocumentUnreadable,
    PatchError,
    STDataError,
    WriteFailed,
)
from .patching import (
    KeyPath,
    OldValue,
    PatchEdit,
    WriteResult,
    apply_patch_text,
    expected_data,
    old_values,
    undo_edits,
    write_patched,
    write_patched_async,
)
from .presets import ConnectionProfile, connection_profiles, list_presets, preset_name, selected_profile
from .secrets import NanoKey, read_nanogpt_key, read_secret, secrets_format
from .stjson import dumps_st, loads_st
from .tokenfile import ensure_token_file, read_token

__all__ = [
    "ConcurrentModification",
    "ConfigUnreadable",
    "ConnectionProfile",
    "Document",
    "DocumentMissing",
    "DocumentTooLarge",
    "DocumentUnreadable",
    "KeyPath",
    "NanoKey",
    "OldValue",
    "PatchEdit",
    "PatchError",
    "STConfig",
    "STDataError",
    "UserPaths",
    "WriteFailed",
    "WriteResult",
    "apply_patch_text",
    "connection_profiles",
    "discover_users",
    "dumps_st",
    "ensure_token_file",
    "expected_data",
    "find_user",
    "is_companion_temp",
    "is_safe_handle",
    "list_presets",
    "loads_st",
    "old_values",
    "preset_name",
    "read_document",
    "read_document_async",
    "read_nanogpt_key",
    "read_secret",
    "read_st_config",
    "read_token",
    "replace_file_atomic",
    "secrets_format",
    "selected_profile",
    "undo_edits",
    "write_new_file_atomic",
    "write_patched",
    "write_patched_async",
]
