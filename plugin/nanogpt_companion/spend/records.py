"""The spend ledger's records: a generation as ST reported it, a stored row, a balance/quota reading.

Field names of ``SpendRow.to_json`` are the HTTP contract (docs/http-contract.md) and the CSV columns.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

Channel = Literal["usd", "quota"]  # what a generation is expected to use up: the balance or the quota
Status = Literal["pending", "measured", "unmeasured"]
QuotaUnit = Literal["tokens", "requests"]

OUTSIDE_SOURCE = "outside"  # a change of the balance or quota that no reported generation explains


@dataclass(frozen=True, slots=True)
class Generation:
    """One NanoGPT generation that ended in ST, as the extension reports it (never the message text).

    ``client_id`` is the extension's own id for it, so a report sent twice (a retry) is recorded once.
    Token counts are what ST reported or computed with its own tokenizer for that message, if anything.
    """

    client_id: str
    model: str
    source: str  # ST's source: nanogpt (built-in), custom, textgen
    endpoint: str | None = None  # NanoGPT base: v1, subscription, paid, personalized, v1legacy, v1thinking
    billing: str | None = None  # "paygo" when ST asked NanoGPT to bill the balance (payg override)
    chat_id: str | None = None
    character: str | None = None
    character_id: str | None = None  # ST's avatar file name, the character's stable id
    group_id: str | None = None
    group_name: str | None = None
    message_id: int | None = None
    kind: str | None = None  # ST's generation type: normal, swipe, continue, quiet, impersonate, ...
    outcome: str = "ok"  # ok | stopped | error
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class Estimate:
    """What the catalogue's prices say a generation costs. ``usd`` is what pay-as-you-go would charge
    (None: no price or no tokens); ``quota`` the subscription input tokens (tokens x multiplier)."""

    usd: float | None
    quota: float | None
    per_request: bool = False  # the model has a per-request price (part or all of ``usd``)


@dataclass(frozen=True, slots=True)
class SpendRow:
    """A stored ledger row: a reported generation, or an ``outside`` change nothing reported explains.

    ``measured_*`` is the change of the balance (USD) or of the quota counter measured for this row;
    ``shared_with`` is how many rows one measured change was split across (1: it was this row's alone),
    and such a split is ``approximate``. ``status``: ``pending`` until a reading settles it,
    ``measured``, or ``unmeasured`` (no reading could tell, the estimate stands; ``note`` says why).
    """

    id: int
    user: str
    key_fingerprint: str
    ts: float  # when the service learnt of it (readings are compared against this clock)
    generation: Generation
    channel: Channel
    estimate: Estimate
    status: Status = "pending"
    measured_usd: float | None = None
    measured_quota: float | None = None
    quota_unit: QuotaUnit | None = None
    approximate: bool = False
    shared_with: int = 0
    interval: int | None = None  # the reading that settled it (rows split together share it)
    note: str | None = None
    attempts: int = 0  # readings that saw no change for this row yet

    @property
    def is_outside(self) -> bool:
        return self.generation.source == OUTSIDE_SOURCE

    @property
    def usd(self) -> float:
        """Best known USD: the measurement, else the estimate while unsettled (balance rows only)."""
        if self.measured_usd is not None:
            return self.measured_usd
        if self.channel == "usd" and self.status != "measured":
            return self.estimate.usd or 0.0
        return 0.0

    @property
    def quota(self) -> float:
        """Best known quota use, the same way."""
        if self.measured_quota is not None:
            return self.measured_quota
        if self.channel == "quota" and self.status != "measured":
            return self.estimate.quota or 0.0
        return 0.0

    @property
    def estimated(self) -> bool:
        """The USD or quota this row counts is an estimate, not a measurement."""
        return self.status != "measured"

    def settled(self, **changes: Any) -> SpendRow:
        return replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        g = self.generation
        return {
            "id": self.id,
            "ts": self.ts,
            "chat_id": g.chat_id,
            "character": g.character,
            "character_id": g.character_id,
            "group_id": g.group_id,
            "group": g.group_name,
            "model": g.model or None,
            "source": g.source,
            "endpoint": g.endpoint,
            "billing": g.billing,
            "kind": g.kind,
            "outcome": g.outcome,
            "message_id": g.message_id,
            "prompt_tokens": g.prompt_tokens,
            "completion_tokens": g.completion_tokens,
            "channel": self.channel,
            "status": self.status,
            "usd": _round(self.usd),
            "measured_usd": _round(self.measured_usd),
            "estimate_usd": _round(self.estimate.usd),
            "per_request": self.estimate.per_request,
            "quota": self.quota,
            "measured_quota": self.measured_quota,
            "estimate_quota": self.estimate.quota,
            "quota_unit": self.quota_unit,
            "approximate": self.approximate,
            "shared_with": self.shared_with,
            "note": self.note,
        }


@dataclass(frozen=True, slots=True)
class Reading:
    """One look at a key's account: balance and the quota counter attribution follows.

    ``bucket`` is the quota window whose ``used`` counter is compared (weekly input tokens when the plan
    has it, else daily; ``daily``/``monthly`` operations on old plans); a different ``reset_at`` between two
    readings means the window rolled over and the difference says nothing about usage.
    """

    ts: float
    usd: float | None
    bucket: str | None = None
    used: float | None = None
    reset_at: int | None = None
    unit: QuotaUnit | None = None
    subscribed: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class SpendSettings:
    """Per user. Budgets in USD (None: no budget); rows older than ``retention_days`` are deleted;
    ``timezone`` (IANA name from the browser) decides where "today" and "this month" begin."""

    daily_budget_usd: float | None = None
    monthly_budget_usd: float | None = None
    retention_days: int = 365
    timezone: str = "UTC"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class BudgetAlert:
    """A budget warning (80 %) or alert (100 %), once per budget, level and day or month."""

    id: str
    kind: Literal["budget_80", "budget_100"]
    level: Literal["warning", "error"]
    message: str
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "level": self.level, "message": self.message, **self.extra}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 10)
