from __future__ import annotations

from aiohttp import web

from nanogpt_companion.doctor.engine import RULES
from nanogpt_companion.doctor.finding import Policy
from nanogpt_companion.doctor_service import DoctorService
from nanogpt_companion.web import keys
from nanogpt_companion.web.bodies import (
    AckRequest,
    FixRequest,
    PolicyRequest,
    SignatureFixRequest,
    SignatureRequest,
    UndoRequest,
    read_body,
)
from nanogpt_companion.web.errors import ApiError, json_response

NO_DATA_ROOT = "The service was started without a SillyTavern directory, so there are no settings to check."


def _doctor(request: web.Request) -> DoctorService:
    doctor = request.app[keys.DOCTOR]
    if doctor is None:
        raise ApiError(409, "no_data_root", NO_DATA_ROOT + " Start it with --sillytavern DIR.")
    return doctor


async def get_findings(request: web.Request) -> web.Response:
    """Findings from the last scan; ``?refresh=1`` (the extension's Re-check) re-reads NanoGPT's catalogue
    and the user's files first."""
    user = request[keys.CURRENT_USER]
    doctor = request.app[keys.DOCTOR]
    if doctor is None:
        return json_response(
            {
                "findings": [],
                "muted": 0,
                "st_version": None,
                "checked_at": None,
                "tab_open": request.app[keys.BUS].tab_open(user.handle),
                "error": {"code": "no_data_root", "message": NO_DATA_ROOT},
                "ppp": None,
            }
        )
    refresh = request.query.get("refresh", "") in ("1", "true")
    return json_response(await doctor.report(user.handle, refresh=refresh))


async def apply_fixes(request: web.Request) -> web.Response:
    user = request[keys.CURRENT_USER]
    body = await read_body(request, FixRequest)
    if not body.all and not body.ids:
        raise ApiError(400, "bad_request", 'Name the findings to fix in "ids", or send {"all": true}.')
    results = await _doctor(request).apply(user.handle, None if body.all else body.ids)
    return json_response({"results": [r.as_json() for r in results]})


async def undo_fix(request: web.Request) -> web.Response:
    user = request[keys.CURRENT_USER]
    body = await read_body(request, UndoRequest)
    result = await _doctor(request).undo(user.handle, body.journal_id)
    status = {"applied": "reverted"}.get(result.status, result.status)
    return json_response({"status": status, "message": result.message})


async def acknowledge(request: web.Request) -> web.Response:
    user = request[keys.CURRENT_USER]
    body = await read_body(request, AckRequest)
    journal_ids = await _doctor(request).acknowledge(user.handle, body.fix_id, body.status, body.message)
    return json_response({"ok": journal_ids is not None, "journal_ids": journal_ids or []})


async def get_journal(request: web.Request) -> web.Response:
    """Recent fixes (file and live), newest first: what the extension's Undo offers."""
    user = request[keys.CURRENT_USER]
    raw = request.query.get("limit", "50")
    if not raw.isdigit() or not 1 <= int(raw) <= 500:
        raise ApiError(400, "bad_request", "limit must be a whole number from 1 to 500.")
    return json_response({"entries": await _doctor(request).journal(user.handle, int(raw))})


def _policies_body(policies: dict[str, Policy]) -> dict[str, object]:
    """The effective policies, plus each rule's name and what it checks, so a panel can show a control per
    rule in the user's words (rules in the order the doctor runs them)."""
    rules = [
        {
            "id": rule.id,
            "title": rule.title,
            "summary": rule.summary,
            "default_policy": rule.default_policy,
            "policy": policies.get(rule.id, rule.default_policy),
        }
        for rule in RULES
    ]
    return {"policies": policies, "rules": rules}


async def get_policies(request: web.Request) -> web.Response:
    user = request[keys.CURRENT_USER]
    return json_response(_policies_body(await _doctor(request).effective_policies(user.handle)))


async def set_policy(request: web.Request) -> web.Response:
    user = request[keys.CURRENT_USER]
    body = await read_body(request, PolicyRequest)
    try:
        policies = await _doctor(request).set_policy(user.handle, body.rule, body.policy)
    except KeyError:
        raise ApiError(404, "not_found", f"No doctor rule named {body.rule!r}.") from None
    return json_response(_policies_body(policies))


async def report_signature(request: web.Request) -> web.Response:
    """A reply in the tab showed a formatting signature: count it, answer with its causes here."""
    user = request[keys.CURRENT_USER]
    body = await read_body(request, SignatureRequest)
    involved = body.settings.model_dump(exclude_unset=True)
    answer = await _doctor(request).signature(user.handle, body.signature, body.evidence, involved)
    answer["message_id"] = body.message_id
    return json_response(answer)


async def fix_signature(request: web.Request) -> web.Response:
    """Apply one cause offered for a reply signature, down the doctor's fix path (journalled, undoable)."""
    user = request[keys.CURRENT_USER]
    body = await read_body(request, SignatureFixRequest)
    result = await _doctor(request).apply_symptom_fix(user.handle, body.id)
    return json_response({"result": result.as_json(), "message_id": body.message_id})


async def get_signature_counts(request: web.Request) -> web.Response:
    user = request[keys.CURRENT_USER]
    return json_response({"counts": await _doctor(request).signature_counts(user.handle)})
