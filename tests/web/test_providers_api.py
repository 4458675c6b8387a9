"""Provider info and image models on demand, the one-click key for every slot, and the doctor's provider,
image and key-slot findings: through the real app, on real ST files, against the fake NanoGPT."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from nanogpt_companion.web import keys
from tests.fakes.nanogpt_providers import NO_SELECTION_MODEL, SELECTABLE_MODEL, UNAVAILABLE_PROVIDER
from tests.fakes.nanogpt_upstream import PAYG_KEY, SUBSCRIBER_KEY
from tests.fakes.st_fixtures import UserSpec, fixture_path
from tests.web.conftest import ST_PORT, Companion, StartCompanion

PROVIDERS_PATH = "/api/models/deepseek/deepseek-v4-pro:thinking/providers"
STALE_KEY = "sk-nano-FAKE-555555555555"  # a rotated key left behind in one slot


def _settings(**oai: Any) -> dict[str, Any]:
    data = json.loads(fixture_path("settings.nanogpt-source-selected.json").read_text())
    data["oai_settings"].update(oai)
    return data


def _entries(value: str, label: str = "k") -> list[dict[str, Any]]:
    return [{"id": label, "value": value, "label": label, "active": True}]


async def _json(resp: Any) -> Any:
    return await resp.json()


async def test_providers_on_demand_cached_and_shared(companion: Companion) -> None:
    fake = companion.upstream.fake
    answers = await asyncio.gather(
        *(companion.get("/api/catalog/providers", params={"model": SELECTABLE_MODEL}) for _ in range(5))
    )
    bodies = [await _json(r) for r in answers]
    assert all(r.status == 200 for r in answers) and all(b == bodies[0] for b in bodies)
    info = bodies[0]
    assert info["supports_selection"] is True and info["known"] is True and info["stale"] is False
    by_id = {p["id"]: p for p in info["providers"]}
    assert by_id[UNAVAILABLE_PROVIDER]["available"] is False
    assert by_id["deepinfra"] == {
        "id": "deepinfra",
        "label": "DeepInfra",  # from NanoGPT's master list
        "available": True,
        "prompt": 0.4,  # USD per 1M (NanoGPT sends 0.0004 per 1K)
        "completion": 1.6,
    }
    # Five concurrent callers, one upstream request (the slash URL-encoded, as ST asks it).
    assert fake.count(PROVIDERS_PATH) == 1
    assert fake.providers.provider_paths == ["/api/models/deepseek%2Fdeepseek-v4-pro:thinking/providers"]
    again = await _json(await companion.get("/api/catalog/providers", params={"model": SELECTABLE_MODEL}))
    assert again == info and fake.count(PROVIDERS_PATH) == 1
    # The catalogue itself never asks for providers.
    await companion.get("/api/catalog")
    assert (
        sum(1 for r in fake.log if r.path.endswith("/providers") and r.path != "/api/models/providers") == 1
    )

    no_selection = await _json(
        await companion.get("/api/catalog/providers", params={"model": NO_SELECTION_MODEL})
    )
    assert no_selection["supports_selection"] is False and no_selection["providers"] == []
    unknown = await _json(await companion.get("/api/catalog/providers", params={"model": "nobody/nothing"}))
    assert unknown["known"] is False
    missing = await companion.get("/api/catalog/providers")
    assert missing.status == 400 and (await _json(missing))["error"]["code"] == "bad_request"


async def test_a_failed_refresh_serves_the_last_answer_marked_stale(start_companion: StartCompanion) -> None:
    companion = await start_companion(catalog_ttl=1.0)
    fake = companion.upstream.fake
    first = await _json(await companion.get("/api/catalog/providers", params={"model": SELECTABLE_MODEL}))
    assert first["stale"] is False
    fake.faults.add("status", route="/api/models/deepseek*", status=503)
    count = fake.count(PROVIDERS_PATH)
    while fake.count(PROVIDERS_PATH) == count:  # past the 1 s freshness: the next call asks NanoGPT again
        body = await _json(await companion.get("/api/catalog/providers", params={"model": SELECTABLE_MODEL}))
        await asyncio.sleep(0.1)  # poll interval while waiting for the freshness to run out
    assert body["stale"] is True and body["providers"] == first["providers"]


async def test_image_models_from_the_legacy_map(companion: Companion) -> None:
    resp = await companion.get("/api/catalog/images")
    body = await _json(resp)
    assert resp.status == 200 and body["count"] == 3
    assert [m["id"] for m in body["models"]] == ["flux-schnell", "hidream", "recraft-v3"]
    flux = body["models"][0]
    assert flux["name"] == "Flux Schnell" and flux["prices"] == {"512x512": 0.0015, "1024x1024": 0.003}
    assert flux["subscription_included"] is True
    assert body["models"][2]["prices"] == {"": 0.04}
    await companion.get("/api/catalog/images")
    assert companion.upstream.fake.count("/api/models") == 1
    assert SUBSCRIBER_KEY not in json.dumps(body)


async def test_one_action_puts_the_key_in_every_needed_slot(
    start_companion: StartCompanion, make_st_install: Any
) -> None:
    settings = _settings(chat_completion_source="custom", custom_url="https://nano-gpt.com/api/v1")
    settings["extension_settings"]["sd"].update(source="nanogpt", model="flux-schnell")
    settings["textgenerationwebui_settings"]["server_urls"]["generic"] = "https://nano-gpt.com/api/v1"
    secrets = {"api_key_custom": _entries(PAYG_KEY), "api_key_generic": _entries(STALE_KEY, "old")}
    st = make_st_install(users={"default-user": UserSpec(settings=settings, secrets=secrets)}, port=ST_PORT)
    companion = await start_companion(st)
    doctor = companion.client.app[keys.DOCTOR]

    report = await _json(await companion.get("/api/doctor"))
    rules = {f["rule"]: f for f in report["findings"]}
    assert rules["image.key"]["details"]["action"] == {"kind": "install_key", "slots": ["nanogpt"]}
    assert rules["keys.slots"]["details"]["stale"] == ["generic"]
    state = await _json(await companion.get("/api/connection/key"))
    assert state["slots"] == {"nanogpt": "empty", "custom": "ours", "generic": "other"}
    assert set(state["needed"]) == {"nanogpt", "custom", "generic"}

    before = st.user().secrets.read_bytes()
    resp = await companion.post("/api/connection/key/all", json={})
    results = (await _json(resp))["results"]
    assert resp.status == 200
    assert [(r["slot"], r["status"]) for r in results] == [
        ("nanogpt", "written"),
        ("custom", "unchanged"),
        ("generic", "written"),
    ]
    written = json.loads(st.user().secrets.read_text())
    assert [(e["value"], e["active"]) for e in written["api_key_nanogpt"]] == [(PAYG_KEY, True)]
    assert [(e["value"], e["active"]) for e in written["api_key_generic"]] == [
        (STALE_KEY, False),
        (PAYG_KEY, True),
    ]
    assert PAYG_KEY not in json.dumps(results)
    # The doctor notices the secrets change on a plain re-check (no settings change, no force).
    await doctor.check_user("default-user")
    report = await _json(await companion.get("/api/doctor"))
    assert not {"image.key", "keys.slots"} & {f["rule"] for f in report["findings"]}

    for result in reversed(results):
        if result["write_id"] is not None:
            undo = await companion.post("/api/connection/key/undo", json={"write_id": result["write_id"]})
            assert (await _json(undo))["status"] == "reverted"
    assert st.user().secrets.read_bytes() == before


async def test_key_everywhere_refuses_plainly(start_companion: StartCompanion, make_st_install: Any) -> None:
    st = make_st_install(
        users={
            "nokey": UserSpec(secrets="none"),
            "nothing": UserSpec(settings=_settings(chat_completion_source="openai")),
        },
        port=ST_PORT,
    )
    companion = await start_companion(st)
    resp = await companion.post("/api/connection/key/all", json={}, handle="nokey")
    assert resp.status == 409 and (await _json(resp))["error"]["code"] == "no_key"
    resp = await companion.post("/api/connection/key/all", json={}, handle="nothing")
    assert resp.status == 409 and (await _json(resp))["error"]["code"] == "nothing_to_do"
    bad = await companion.post("/api/connection/key/all", json={"slots": ["openai"]}, handle="nothing")
    assert bad.status == 400


async def test_doctor_checks_the_chosen_provider_on_st_1_18_and_fixes_it(
    start_companion: StartCompanion, make_st_install: Any
) -> None:
    chosen = _settings(nanogpt_model=SELECTABLE_MODEL, nanogpt_provider=UNAVAILABLE_PROVIDER)
    old = _settings(nanogpt_model=SELECTABLE_MODEL)
    for key in ("nanogpt_provider", "nanogpt_payg_override"):
        old["oai_settings"].pop(key)
    old["currentVersion"] = "1.13.5"
    st = make_st_install(
        users={"default-user": UserSpec(settings=chosen), "old": UserSpec(settings=old)}, port=ST_PORT
    )
    companion = await start_companion(st)
    fake = companion.upstream.fake
    report = await _json(await companion.get("/api/doctor"))
    finding = next(f for f in report["findings"] if f["rule"] == "provider.choice")
    assert finding["details"]["kind"] == "unavailable" and finding["fixable"] is True
    assert [c["id"] for c in finding["details"]["choices"]][:1] == ["deepinfra"]

    old_report = await _json(await companion.get("/api/doctor", handle="old"))
    assert not [f for f in old_report["findings"] if f["rule"].startswith("provider.")]
    assert fake.count(PROVIDERS_PATH) == 1  # asked for the user with a provider chosen only

    resp = await companion.post("/api/doctor/fix", json={"ids": [finding["id"]]})
    assert [r["status"] for r in (await _json(resp))["results"]] == ["applied"]
    saved = json.loads(st.user().settings.read_text())
    assert saved["oai_settings"]["nanogpt_provider"] == ""
    old_saved = json.loads(st.user("old").settings.read_text())
    assert "nanogpt_provider" not in old_saved["oai_settings"]
