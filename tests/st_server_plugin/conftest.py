"""Fixtures: the plugin in the harness (production and tight limits) in an ST folder whose data root has three
users; tests write the link file (where the service is) and the users' token files."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .support import Harness, TokenIssuer, start_harness, stop_harness


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data root with the users the tests act as; token files are written per test."""
    root = tmp_path_factory.mktemp("st") / "data"
    (root.parent / "plugins").mkdir()
    for handle in ("default-user", "alice", "bob"):
        (root / handle / "user" / "files").mkdir(parents=True)
    return root


@pytest.fixture(scope="module")
def issue_token(data_root: Path) -> TokenIssuer:
    return TokenIssuer(data_root)


@pytest.fixture(scope="module")
def harness(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    """The plugin with its production defaults."""
    h = start_harness(tmp_path_factory.mktemp("harness"), data_root)
    yield h
    stop_harness(h)


@pytest.fixture(scope="module")
def tight_harness(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    """The plugin with small limits, so timeout and size caps are reached quickly."""
    h = start_harness(
        tmp_path_factory.mktemp("tight"),
        data_root,
        timeout_ms=400,
        max_request_bytes=2048,
        max_response_bytes=4096,
    )
    yield h
    stop_harness(h)
