"""Regenerate the SillyTavern fixtures from real ST, one folder per version under tests/fixtures/sillytavern/.

Run: ``python -m tests.realst.make_fixtures [--version 1.19.0 ...]`` (installs ST into the cache if needed).
Each version is taken through a new user's first steps in headless Chromium, through ST's own UI handlers,
and the files ST wrote are copied out at each step:

- ``settings.seed.json``: what ST put in the user folder at its first start (before any page load);
- ``settings.first-save.json``: after the first page load and the welcome dialog (ST's defaults);
- ``settings.nanogpt.json``: Chat Completion, the built-in NanoGPT source, the key typed into ST's key field
  and Connect pressed (the model list came from the fake NanoGPT through the test internet), a model chosen;
- ``preset.NanoGPT.json``: that state saved as a Chat Completion preset named "NanoGPT" (Save preset as);
- ``settings.custom-nanogpt.json``: the Custom (OpenAI-compatible) source at ``https://nano-gpt.com/api/v1``
  with the key in the Custom key field, connected, a model chosen;
- ``settings.textgen-nanogpt.json``: Text Completion, Generic type, ``https://nano-gpt.com/api/v1``, the key
  in the Generic key field, connected;
- ``secrets.json``: the secrets file after all of the above (FAKE keys of the fake upstream);
- ``provenance.json``: the ST version, the date and the model ids used.

No ST code is copied; these are data files ST wrote.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.fakes.nanogpt_upstream import SUBSCRIBER_KEY
from tests.fixtures import ST_FIXTURES
from tests.realst.browser import STPage, launch_chromium
from tests.realst.stack import RealStack, real_stack
from tests.realst.versions import ST_VERSIONS

HANDLE = "default-user"


def _wait_file(path: Path, predicate: Any, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
            if predicate(data):
                return data
        except (OSError, ValueError):
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{path} never reached the expected state")


def _copy(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    # Re-indent nothing: the bytes ST wrote are the fixture.
    shutil.copyfile(src, dest)


def _first_model(page: STPage, select: str) -> str:
    return str(
        page.js(
            f"() => Array.from(document.querySelectorAll('{select} option')).map(o => o.value).find(v => v)"
        )
    )


def _connect(page: STPage, button: str, select: str | None) -> None:
    page.js(f"() => jQuery('{button}').trigger('click')")
    if select:
        page.page.wait_for_function(
            f"() => document.querySelectorAll('{select} option[value]:not([value=\"\"])').length > 10",
            timeout=30000,
        )


def generate(version: str, out: Path) -> None:
    with (
        tempfile.TemporaryDirectory(prefix=f"st-fixtures-{version}-") as tmp,
        real_stack(Path(tmp), version, users={}, install=None, service=False) as stack,
    ):
        _generate(stack, out)


def _generate(stack: RealStack, out: Path) -> None:
    from playwright.sync_api import sync_playwright

    user = stack.user_dir(HANDLE)
    settings_path = user / "settings.json"
    _copy(settings_path, out / "settings.seed.json")
    seed_text = settings_path.read_text(encoding="utf-8")
    with sync_playwright() as pw:
        browser = launch_chromium(pw)
        page = STPage.open(browser, stack.url, wait_ready=False)
        # The welcome dialog (persona name) blocks ST's settings load until it is answered, as for a user.
        page.page.wait_for_selector("dialog.popup .popup-button-ok", timeout=60000)
        page.page.click("dialog.popup .popup-button-ok")
        page.wait_app_ready()
        _wait_file(settings_path, lambda d: not d.get("firstRun", True))
        if settings_path.read_text(encoding="utf-8") == seed_text:
            raise RuntimeError("ST did not save settings after the first load")
        _copy(settings_path, out / "settings.first-save.json")

        # Built-in NanoGPT source: key typed into ST's field, Connect pressed, a model chosen.
        page.js("() => jQuery('#main_api').val('openai').trigger('change')")
        page.js("() => jQuery('#chat_completion_source').val('nanogpt').trigger('change')")
        page.js(f"() => jQuery('#api_key_nanogpt').val('{SUBSCRIBER_KEY}').trigger('input')")
        _connect(page, "#api_button_openai", "#model_nanogpt_select")
        model = _first_model(page, "#model_nanogpt_select")
        page.js(f"() => jQuery('#model_nanogpt_select').val('{model}').trigger('change')")
        _wait_file(
            settings_path,
            lambda d: (
                d.get("main_api") == "openai"
                and d["oai_settings"].get("chat_completion_source") == "nanogpt"
                and d["oai_settings"].get("nanogpt_model") == model
            ),
        )
        _copy(settings_path, out / "settings.nanogpt.json")

        # Save preset as "NanoGPT" through ST's own dialog.
        page.js("() => jQuery('#new_oai_preset').trigger('click')")
        page.page.wait_for_selector("dialog.popup input.result-control, dialog.popup textarea.result-control")
        page.page.fill("dialog.popup .result-control", "NanoGPT")
        page.page.click("dialog.popup .popup-button-ok")
        preset = user / "OpenAI Settings" / "NanoGPT.json"
        _wait_file(preset, lambda d: isinstance(d, dict) and len(d) > 10)
        _copy(preset, out / "preset.NanoGPT.json")

        # Custom (OpenAI-compatible) at NanoGPT's URL, key in the Custom field.
        page.js("() => jQuery('#chat_completion_source').val('custom').trigger('change')")
        page.js("() => jQuery('#custom_api_url_text').val('https://nano-gpt.com/api/v1').trigger('input')")
        page.js(f"() => jQuery('#api_key_custom').val('{SUBSCRIBER_KEY}').trigger('input')")
        _connect(page, "#api_button_openai", "#model_custom_select")
        custom_model = _first_model(page, "#model_custom_select")
        page.js(f"() => jQuery('#model_custom_select').val('{custom_model}').trigger('change')")
        _wait_file(
            settings_path,
            lambda d: (
                d["oai_settings"].get("chat_completion_source") == "custom"
                and d["oai_settings"].get("custom_model") == custom_model
                and d["oai_settings"].get("custom_url") == "https://nano-gpt.com/api/v1"
            ),
        )
        _copy(settings_path, out / "settings.custom-nanogpt.json")

        # Text Completion, Generic (OpenAI-compatible) at NanoGPT's URL, key in the Generic field.
        page.js("() => jQuery('#main_api').val('textgenerationwebui').trigger('change')")
        page.js("() => jQuery('#textgen_type').val('generic').trigger('change')")
        page.js("() => jQuery('#generic_api_url_text').val('https://nano-gpt.com/api/v1').trigger('input')")
        page.js(f"() => jQuery('#api_key_generic').val('{SUBSCRIBER_KEY}').trigger('input')")
        _connect(page, "#api_button_textgenerationwebui", None)
        page.page.wait_for_function(
            "() => document.querySelectorAll('#generic_model_fill option').length > 10", timeout=30000
        )
        text_model = str(page.js("() => document.querySelector('#generic_model_fill option')?.value ?? ''"))
        page.js(f"() => jQuery('#generic_model_textgenerationwebui').val('{text_model}').trigger('input')")
        _wait_file(
            settings_path,
            lambda d: (
                d.get("main_api") == "textgenerationwebui"
                and d["textgenerationwebui_settings"].get("type") == "generic"
                and d["textgenerationwebui_settings"].get("generic_model") == text_model
            ),
        )
        _copy(settings_path, out / "settings.textgen-nanogpt.json")
        page.screenshot(f"fixtures-{stack.version}.png")
        page.close()
        browser.close()
    _copy(user / "secrets.json", out / "secrets.json")
    provenance = {
        "sillytavern": stack.version,
        "generated": time.strftime("%Y-%m-%d", time.gmtime()),
        "by": "python -m tests.realst.make_fixtures",
        "nanogpt_model": model,
        "custom_model": custom_model,
        "textgen_model": text_model,
        "keys": "FAKE keys of tests/fakes/nanogpt_upstream.py",
    }
    (out / "provenance.json").write_text(json.dumps(provenance, indent=4) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--version", action="append", choices=ST_VERSIONS, help="default: every version")
    args = parser.parse_args(argv)
    for version in args.version or ST_VERSIONS:
        out = ST_FIXTURES / version
        tmp_out = Path(tempfile.mkdtemp(prefix=f"fixtures-{version}-"))
        generate(version, tmp_out)
        shutil.rmtree(out, ignore_errors=True)
        shutil.copytree(tmp_out, out)
        shutil.rmtree(tmp_out)
        print(f"SillyTavern {version}: fixtures written to {out}")


if __name__ == "__main__":
    main()
