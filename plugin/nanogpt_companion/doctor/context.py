"""Everything a doctor rule may look at, in one immutable value.

The service layer reads the files and builds this; rules never touch the disk or the network, which is
what lets them run on every watcher event and be tested from plain dictionaries.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from nanogpt_companion.doctor.families import FamilyTable, builtin_family_table
from nanogpt_companion.domain import AccountSnapshot, CatalogEntry, ModelProviders
from nanogpt_companion.sillytavern.secrets_writer import SlotName, SlotState
from nanogpt_companion.sillytavern.server_config import ServerExposure
from nanogpt_companion.sillytavern.version import STVersion, detect_st_version


@dataclass(frozen=True)
class DoctorContext:
    settings: Mapping[str, Any]  # parsed settings.json
    st_version: STVersion
    presets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # file stem -> parsed preset
    catalogue: Mapping[str, CatalogEntry] | None = None  # None = unknown: rules that need it stay silent
    account: AccountSnapshot | None = None
    family_table: FamilyTable = field(default_factory=builtin_family_table)
    st_server: ServerExposure | None = None  # the ST install's config.yaml; None = unknown (data root only)
    # Model ids a catalogue refresh saw disappear -> when (unix time): tells "removed" from "mistyped".
    removed_models: Mapping[str, float] = field(default_factory=dict)
    # NanoGPT's provider info for the models this user uses (looked-up id -> info); missing = unknown.
    providers: Mapping[str, ModelProviders] = field(default_factory=dict)
    provider_names: Mapping[str, str] = field(default_factory=dict)  # NanoGPT's master list, id -> label
    # What each ST key slot holds compared with the user's NanoGPT key; None = unknown (no key from ST).
    key_slots: Mapping[SlotName, SlotState] | None = None

    @classmethod
    def build(
        cls,
        settings: Mapping[str, Any],
        *,
        presets: Mapping[str, Mapping[str, Any]] | None = None,
        catalogue: Mapping[str, CatalogEntry] | None = None,
        account: AccountSnapshot | None = None,
        family_table: FamilyTable | None = None,
        st_version: STVersion | None = None,
        removed_models: Mapping[str, float] | None = None,
    ) -> DoctorContext:
        """Convenience: detects the ST version from ``settings`` unless one is given."""
        return cls(
            settings=settings,
            st_version=st_version if st_version is not None else detect_st_version(settings),
            presets=presets or {},
            catalogue=catalogue,
            account=account,
            family_table=family_table if family_table is not None else builtin_family_table(),
            removed_models=removed_models or {},
        )
