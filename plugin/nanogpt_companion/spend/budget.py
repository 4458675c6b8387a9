"""Daily and monthly budgets (USD, set by the user): where the spend stands, and the alerts it raises.

A warning at 80 % and an alert at 100 %, once each per budget, level and period: the alert id names the
day or month and the budget amount, so a new day (or a budget the user raised) arms them again. Crossing
straight past 80 % gives only the 100 % alert; the 80 % one is then recorded as already shown, so a later
correction (a measurement below the estimate) cannot bring an 80 % warning after the 100 % alert.
What counts is the best known USD (measured, else estimated, plus changes from outside ST on the key):
a budget is about the money, whoever spent it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any, Literal

from nanogpt_companion.spend.records import BudgetAlert, SpendSettings

WARN = 0.8
FULL = 1.0

Period = Literal["daily", "monthly"]


@dataclass(frozen=True, slots=True)
class BudgetState:
    period: Period
    budget: float | None
    spent: float
    estimated: bool  # part of ``spent`` is not measured yet

    @property
    def fraction(self) -> float | None:
        return None if not self.budget else self.spent / self.budget

    def to_json(self) -> dict[str, Any]:
        return {
            "budget_usd": self.budget,
            "spent_usd": round(self.spent, 8),
            "fraction": None if self.fraction is None else round(self.fraction, 4),
            "estimated": self.estimated,
        }


def states(
    settings: SpendSettings, day_usd: float, day_estimated: bool, month_usd: float, month_estimated: bool
) -> tuple[BudgetState, BudgetState]:
    return (
        BudgetState("daily", settings.daily_budget_usd, day_usd, day_estimated),
        BudgetState("monthly", settings.monthly_budget_usd, month_usd, month_estimated),
    )


def alerts(state: BudgetState, today: date) -> tuple[BudgetAlert | None, list[str]]:
    """The alert this state calls for (None: none) and ids to record as shown without showing them."""
    fraction = state.fraction
    if fraction is None or fraction < WARN or state.budget is None:
        return None, []
    period = today.isoformat() if state.period == "daily" else today.strftime("%Y-%m")
    base = f"budget_{state.period}_{{level}}:{period}:{state.budget:g}"
    warn_id, full_id = base.format(level=80), base.format(level=100)
    about = "about " if state.estimated else ""
    what = "daily" if state.period == "daily" else "monthly"
    extra = {"period": state.period, "budget_usd": state.budget, "spent_usd": round(state.spent, 6)}
    if fraction >= FULL:
        alert = BudgetAlert(
            id=full_id,
            kind="budget_100",
            level="error",
            message=(
                f"Your {what} NanoGPT budget is used up: {about}${state.spent:.2f} spent of "
                f"${state.budget:.2f} ({fraction:.0%})."
            ),
            extra=extra,
        )
        return alert, [warn_id]
    alert = BudgetAlert(
        id=warn_id,
        kind="budget_80",
        level="warning",
        message=(
            f"You have spent {about}${state.spent:.2f} of your ${state.budget:.2f} {what} NanoGPT budget "
            f"({fraction:.0%})."
        ),
        extra=extra,
    )
    return alert, []
