"""The endpoint switch's key routes and the alert inbox, through the real app on real ST files."""

from __future__ import annotations

import asyncio
import json

from tests.fakes.nanogpt_upstream import PAYG_KEY, SUBSCRIBER_KEY
from tests.fakes.st_fixtures import UserSpec, fixture_path
from tests.web.conftest import ST_PORT, Companion, StartCompanion

CUSTOM_KEY = "sk-custom-FAKE-2222222"


async def _body(resp: object) -> dict:
    return await resp.json()  # type: ignore[attr-defined, no-any-return]


async def test_key_is_copied_into_the_custom_slot_and_undone(companion: Companion) -> None:
    secrets = companion.st.user().secrets
    before = secrets.read_bytes()
    state = await _body(await companion.get("/api/connection/key"))
    assert state == {
        "key": {"present": True, "source": "sillytavern"},
        "slots": {"nanogpt": "ours", "custom": "other", "generic": "empty"},
        "needed": {"nanogpt": ["Chat Completion (NanoGPT source)"]},
    }
    resp = await companion.post("/api/connection/key", json={"slot": "custom"})
    assert resp.status == 200
    written = await _body(resp)
    assert written["status"] == "written" and written["secret"] == "api_key_custom"
    assert written["layout"] == "list" and isinstance(written["write_id"], int)
    custom = json.loads(secrets.read_text())["api_key_custom"]
    assert [(e["value"], e["active"]) for e in custom] == [(CUSTOM_KEY, False), (SUBSCRIBER_KEY, True)]
    state = await _body(await companion.get("/api/connection/key"))
    assert state["slots"]["custom"] == "ours"
    again = await _body(await companion.post("/api/connection/key", json={"slot": "custom"}))
    assert again["status"] == "unchanged" and again["write_id"] is None

    undone = await _body(
        await companion.post("/api/connection/key/undo", json={"write_id": written["write_id"]})
    )
    assert undone["status"] == "reverted"
    assert secrets.read_bytes() == before
    twice = await _body(
        await companion.post("/api/connection/key/undo", json={"write_id": written["write_id"]})
    )
    assert twice["status"] == "already_undone"
    # Another user cannot undo (or even see) this user's change.
    other = await companion.post(
        "/api/connection/key/undo", json={"write_id": written["write_id"]}, handle="alice"
    )
    assert other.status == 404
    everything = json.dumps([state, written, again, undone, twice])
    assert SUBSCRIBER_KEY not in everything and CUSTOM_KEY not in everything


async def test_refusals_say_why_and_write_nothing(start_companion: StartCompanion, make_st_install) -> None:
    st = make_st_install(
        users={
            "nokey": UserSpec(secrets="none"),
            "flat": UserSpec(secrets={"api_key_nanogpt": PAYG_KEY, "api_key_custom": CUSTOM_KEY}),
        },
        port=ST_PORT,
    )
    companion = await start_companion(st)
    resp = await companion.post("/api/connection/key", json={"slot": "custom"}, handle="nokey")
    assert resp.status == 409
    error = (await _body(resp))["error"]
    assert error["code"] == "no_key" and "API Connections" in error["message"]
    assert not st.user("nokey").secrets.exists()

    flat_before = st.user("flat").secrets.read_bytes()
    resp = await companion.post("/api/connection/key", json={"slot": "custom"}, handle="flat")
    assert resp.status == 409
    error = (await _body(resp))["error"]
    assert error["code"] == "slot_taken" and "one key per slot" in error["message"]
    assert st.user("flat").secrets.read_bytes() == flat_before
    # The empty Generic slot of the same flat file can be filled, in the flat format.
    resp = await companion.post("/api/connection/key", json={"slot": "generic"}, handle="flat")
    assert (await _body(resp))["layout"] == "flat"
    assert json.loads(st.user("flat").secrets.read_text())["api_key_generic"] == PAYG_KEY

    bad = await companion.post("/api/connection/key", json={"slot": "openai"}, handle="flat")
    assert bad.status == 400


async def test_a_key_from_the_services_configuration_is_not_copied(
    start_companion: StartCompanion, make_st_install
) -> None:
    st = make_st_install(users={"default-user": UserSpec(secrets="none")}, port=ST_PORT)
    companion = await start_companion(st, api_key=PAYG_KEY)
    resp = await companion.post("/api/connection/key", json={"slot": "custom"})
    assert resp.status == 409
    assert (await _body(resp))["error"]["code"] == "key_not_in_sillytavern"
    assert not st.user().secrets.exists()


async def test_alerts_wait_for_a_tab_and_are_shown_once(start_companion: StartCompanion) -> None:
    companion = await start_companion(low_balance_usd=500.0)  # the subscriber's $129 is "low"
    account = await _body(await companion.get("/api/account"))  # a poll with no tab open
    assert account["low_balance"] is True and account["low_balance_usd"] == 500.0
    inbox = (await _body(await companion.get("/api/alerts")))["alerts"]
    assert [a["kind"] for a in inbox] == ["low_balance"]
    assert "below your $500.00" in inbox[0]["message"]
    alices = (await _body(await companion.get("/api/alerts", handle="alice")))["alerts"]
    assert all("$9.55" in a["message"] for a in alices)  # each user sees only their own account's alerts
    marked = await _body(await companion.post("/api/alerts/seen", json={"ids": [inbox[0]["id"]]}))
    assert marked == {"marked": 1}
    assert (await _body(await companion.get("/api/alerts")))["alerts"] == []


async def test_refresh_the_user_asks_for_is_rate_limited(companion: Companion) -> None:
    fake = companion.upstream.fake
    first = await _body(await companion.get("/api/account?refresh=1"))
    assert first["next_refresh_at"] is not None
    calls = fake.count("/api/check-balance")
    for _ in range(5):
        await companion.get("/api/account?refresh=1")
    assert fake.count("/api/check-balance") == calls  # five presses, no request to NanoGPT


async def test_a_model_removed_upstream_is_reported_without_a_file_change(
    start_companion: StartCompanion, make_st_install
) -> None:
    """NanoGPT drops the model the user has selected: the catalogue refresh alone (no settings.json
    change) brings the doctor's finding, so an open tab shows it at once."""
    settings = json.loads(fixture_path("settings.nanogpt-source-selected.json").read_text())
    companion = await start_companion(
        make_st_install(users={"default-user": UserSpec(settings=settings)}, port=ST_PORT)
    )
    fake = companion.upstream.fake
    model = sorted(i for i in fake.ids("subscription") if ":" not in i)[0]
    settings["oai_settings"]["nanogpt_model"] = model
    settings["oai_settings"]["chat_completion_source"] = "nanogpt"
    companion.st.user().settings.write_text(json.dumps(settings, indent=4))
    findings = (await _body(await companion.get("/api/doctor")))["findings"]
    assert not any(f["rule"] == "model.gone" for f in findings)
    fake.remove_model(model)
    assert (await companion.post("/api/catalog/refresh")).status == 200
    for _ in range(200):  # the re-check runs beside the refresh answer; wait for it, bounded
        findings = (await _body(await companion.get("/api/doctor")))["findings"]
        if any(f["rule"] == "model.gone" for f in findings):
            break
        await asyncio.sleep(0.02)
    gone = [f for f in findings if f["rule"] == "model.gone"]
    assert gone and gone[0]["details"]["model"] == model
