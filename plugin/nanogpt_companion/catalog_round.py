"""A catalogue round's parse and merge, run in a short-lived helper process.

Why a separate process: parsing NanoGPT's four model lists makes a few MB of small Python objects that
live for a fraction of a second. In a long-running process those come and go in memory the service never
gets back: a handful of long-lived objects made meanwhile (anything another request keeps) pin the pages
they sit on, and measured that way a service with ten users kept ~4 MB more for good after its first
rounds. A helper process takes the lists as NanoGPT sent them and hands back only the merged entries'
JSON, one buffer for all; the service then keeps its catalogue without ever holding the parse. Rounds
that find NanoGPT's answer unchanged (most) never get here (``CatalogService._same_lists``).

If the helper cannot run (no permission to start processes, a crash), the same ``build_round`` runs in a
worker thread of the service instead, and the log says so once.

Run as ``python -P -m nanogpt_companion.catalog_round``: a pickled ``RoundInput`` on stdin, a pickled
``RoundOutput`` on stdout. Pickle is safe here: both ends are this package, in this installation.
"""

from __future__ import annotations

import asyncio
import pickle
import subprocess
import sys
from dataclasses import dataclass, field

from pydantic_core import from_json

from nanogpt_companion.catalog_merge import TierMerger, upstream_from_entry
from nanogpt_companion.catalog_snapshot import Serialised, TierStatus, read_stored, serialise
from nanogpt_companion.domain import CatalogEntry, Tier
from nanogpt_companion.nanogpt.errors import MalformedResponseError
from nanogpt_companion.nanogpt.redaction import KeyRedactor
from nanogpt_companion.nanogpt.schemas import SkippedEntry, parse_model_list

HELPER_TIMEOUT = 120.0  # seconds; a round's parse takes ~0.1 s of CPU, the helper's start ~0.3 s
_STDERR_SHOWN = 300  # characters of a failed helper's last error line put in the log


@dataclass(frozen=True)
class RoundInput:
    """What a round's entries are made from."""

    lists: dict[Tier, bytes]  # each list that arrived, as NanoGPT sent it, in ``TIER_ORDER``
    redact: tuple[str, ...]  # keys masked in every string (``KeyRedactor``)
    # The tiers the last snapshot had, and its entries (a JSON array): a tier whose list did not arrive or
    # cannot be read keeps its memberships from there, so a passing fault does not flip every SUB badge.
    carry_tiers: tuple[Tier, ...] = ()
    previous: bytes | None = None


@dataclass(frozen=True)
class StoredInput:
    """A snapshot as the store keeps it (``CatalogSnapshot.to_store``), to be read back."""

    payload: bytes
    redact: tuple[str, ...]  # saved by an older version, perhaps before every field was redacted


@dataclass(frozen=True)
class RoundOutput:
    # Per list that arrived: how many models it listed, or why it could not be read.
    outcomes: dict[Tier, int | str]
    skipped: dict[Tier, list[SkippedEntry]]  # unusable entries, per list (logged by the service)
    entries: Serialised = field(default_factory=Serialised)  # every merged entry's JSON, in id order
    tiers: dict[str, TierStatus] = field(default_factory=dict)  # a stored snapshot's status per tier


class HelperFailed(Exception):
    """The helper process did not produce a round (it could not start, crashed or timed out)."""


def build_round(job: RoundInput) -> RoundOutput:
    """Parse, redact and merge the lists; serialise each entry as the catalogue keeps it."""
    redactor = KeyRedactor(job.redact)
    merger = TierMerger()
    outcomes: dict[Tier, int | str] = {}
    skipped: dict[Tier, list[SkippedEntry]] = {}
    for tier, body in job.lists.items():
        try:
            parsed = parse_model_list(body)
        except MalformedResponseError as exc:
            outcomes[tier] = str(exc)
            continue
        models = [redactor.value(model) for model in parsed.models]
        merger.add(tier, models)
        outcomes[tier] = len(models)
        if parsed.skipped:
            skipped[tier] = [redactor.value(entry) for entry in parsed.skipped]
        del parsed, models
    carry = [t for t in job.carry_tiers if not isinstance(outcomes.get(t), int)]
    if carry and job.previous is not None:
        previous = [
            CatalogEntry.model_validate(item) for item in from_json(job.previous, cache_strings="keys")
        ]
        for tier in carry:
            merger.add(tier, [upstream_from_entry(e) for e in previous if tier in e.tiers])
        del previous
    return RoundOutput(outcomes, skipped, serialise(merger.entries()))


def build_stored(job: StoredInput) -> RoundOutput:
    """A stored snapshot read back: its entries validated, redacted and serialised, and its tiers."""
    entries, tiers = read_stored(job.payload, KeyRedactor(job.redact).value)
    return RoundOutput({}, {}, entries, tiers)


def build(job: RoundInput | StoredInput) -> RoundOutput:
    return build_round(job) if isinstance(job, RoundInput) else build_stored(job)


async def build_round_in_helper(
    job: RoundInput | StoredInput, *, python: str = sys.executable, limit: float = HELPER_TIMEOUT
) -> RoundOutput:
    """``build`` in a helper process of its own, run by the ``python`` interpreter (the service's);
    ``HelperFailed`` when it gives no round.

    The helper is waited for in a worker thread, not through asyncio's subprocess transport: a round
    cancelled while asyncio was still starting the process could wait for ever for an exit it was never
    told of (seen when the service stopped mid-round). Cancelled, the round returns at once and the
    thread sees the helper out (a second or less; ``limit`` at worst).
    """
    return await asyncio.to_thread(_run_helper, pickle.dumps(job, protocol=5), python, limit, job.redact)


def _run_helper(payload: bytes, python: str, limit: float, redact: tuple[str, ...]) -> RoundOutput:
    try:
        done = subprocess.run(  # noqa: S603 - our own interpreter and module, no shell
            [python, "-P", "-m", __name__], input=payload, capture_output=True, timeout=limit, check=False
        )
    except subprocess.TimeoutExpired:
        raise HelperFailed(f"it took longer than {limit:.0f} s") from None
    except OSError as exc:
        raise HelperFailed(f"could not start it: {exc.strerror or exc}") from None
    if done.returncode != 0:
        lines = done.stderr.decode(errors="replace").strip().splitlines()
        last = KeyRedactor(redact).text(lines[-1][:_STDERR_SHOWN]) if lines else "no message"
        raise HelperFailed(f"it exited with {done.returncode}: {last}")
    try:
        result = pickle.loads(done.stdout)  # noqa: S301 - written by this package's own helper, just above
    except Exception as exc:
        raise HelperFailed(f"its answer was unreadable ({type(exc).__name__})") from None
    if not isinstance(result, RoundOutput):
        raise HelperFailed(f"its answer was a {type(result).__name__}, not a round")
    return result


def main() -> int:
    job = pickle.loads(sys.stdin.buffer.read())  # noqa: S301 - sent by the service that started us
    if not isinstance(job, RoundInput | StoredInput):
        print(f"expected a RoundInput or StoredInput, got {type(job).__name__}", file=sys.stderr)
        return 2
    sys.stdout.buffer.write(pickle.dumps(build(job), protocol=5))
    sys.stdout.buffer.flush()
    return 0


if __name__ == "__main__":
    # Through the package's module, not ``__main__``'s copy of it: pickles name the classes by module.
    from nanogpt_companion.catalog_round import main as packaged_main

    raise SystemExit(packaged_main())
