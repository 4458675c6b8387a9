from tests.extension.test_extension import *
def test_dbg(page, harness):
    wait_connected(page)
    open_drawer(page)
    page.click("#ngc_browse")
    page.wait_for_selector("dialog.popup .ngc-catalog .ngc-model")
    target = page.query_selector_all(".ngc-catalog .ngc-model:not(.ngc-variant)")[0].get_attribute("data-id")
    print("target", target)
    page.click(f'.ngc-catalog button[data-act="use"][data-id="{target}"]')
    page.wait_for_timeout(3000)
    print(js(page, "[window.stStandIn.connectClicks, window.stStandIn.handlerCalls, document.querySelectorAll('#model_nanogpt_select option').length, SillyTavern.getContext().chatCompletionSettings.nanogpt_model, [...document.querySelectorAll('.toast')].map(t=>t.textContent)]"))
    print([m.text for m in harness.console])
