"""The live monitor in a real browser: headless Chromium (Debian's ``chromium``) shows a SAXS flow run
while it goes on; the numbers and plots on the page update by themselves; a bad run id and a corrupt
run.json give a clear message. Screenshots are kept in ``test-artifacts/`` (gitignored).

Skips where chromium is absent, except under CI (CI=true), where that is a failure.
"""

import json
import threading
from pathlib import Path

import pytest
from monitor_helpers import Chromium, MonitorServer, chromium_binary, run_saxs_flow, write_saxs_dataset

pytestmark = pytest.mark.timeout(240)

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"
N_FRAMES = 300  # batches of 2 on one thread: about 10 s of running flow


def _num(page, element_id):
    return page.eval(
        f"(() => {{ const v = document.getElementById({element_id!r}).dataset.value;"
        f" return v === undefined || v === '' ? null : Number(v); }})()"
    )


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    binary = chromium_binary()
    page = Chromium(binary, tmp_path_factory.mktemp("chromium-profile"), width=1400, height=1100)
    yield page
    page.close()


def test_page_follows_a_running_saxs_flow(browser, tmp_path):
    cal, data = write_saxs_dataset(tmp_path / "ds", N_FRAMES)
    root = tmp_path / "outputs"
    root.mkdir()
    ARTIFACTS.mkdir(exist_ok=True)
    with MonitorServer([root], interval_s=0.5) as server:
        browser.navigate(server.url)
        browser.wait_for("!document.getElementById('runs-empty').hidden", 20, "the 'no runs yet' hint")

        result = {}
        flow = threading.Thread(
            target=lambda: result.update(state=run_saxs_flow(cal, data, root / "saxs-run", batch_size=2, workers=1)),
            daemon=True,
        )
        flow.start()
        try:
            # the run appears and is selected by itself; its numbers and progress plot show while it runs
            browser.wait_for(
                "document.getElementById('run').dataset.state === 'running' && "
                "Number(document.getElementById('n-done').dataset.value) > 0 && "
                "document.getElementById('plot-progress').dataset.loaded === '1'",
                60,
                "the running run with frames done and its progress plot",
            )
            first = _num(browser, "n-done")
            version = browser.eval("document.getElementById('plot-progress').dataset.version")
            assert browser.eval("document.getElementById('run-kind').textContent") == "saxs"
            assert _num(browser, "n-total") == N_FRAMES + 1
            # the same page, not reloaded: the count goes up and the plot is redrawn
            browser.wait_for(
                f"Number(document.getElementById('n-done').dataset.value) > {first} && "
                f"document.getElementById('plot-progress').dataset.version !== {version!r}",
                60,
                "frames done to increase and the progress plot to be redrawn",
            )
            second = _num(browser, "n-done")
            assert second > first
            browser.wait_for(
                "document.getElementById('plot-saxs-curve').dataset.loaded === '1' && "
                "document.getElementById('plot-saxs-params').dataset.loaded === '1'",
                30,
                "the I(q) and integral parameter plots",
            )
            running_shot = browser.screenshot(ARTIFACTS / "monitor_saxs_running.png")
        finally:
            flow.join(120)
        assert result["state"].is_completed()

        # the end of the run: final counts, the same as the data endpoint says
        browser.wait_for("document.getElementById('run').dataset.state === 'completed'", 30, "the completed state")
        run_id = browser.eval("document.getElementById('run').dataset.runId")
        api = server.get_json(f"api/runs/{run_id}")
        assert api["done"] == N_FRAMES and api["failed"] == 1
        browser.wait_for(f"Number(document.getElementById('n-done').dataset.value) === {N_FRAMES}", 10)
        assert _num(browser, "n-failed") == 1
        assert _num(browser, "saxs-curves") == N_FRAMES
        assert _num(browser, "saxs-i0") == pytest.approx(api["saxs"]["latest"]["I0"])
        # the Prefect flow run: its id always, a link to its page when the API has a UI
        flow_run_id = str(result["state"].state_details.flow_run_id)
        assert api["prefect"]["flow_run_id"] == flow_run_id
        assert browser.eval("document.getElementById('prefect-run').dataset.flowRunId") == flow_run_id
        if api["prefect"]["url"]:
            assert browser.eval("document.getElementById('prefect-link').href") == api["prefect"]["url"]
        images = browser.eval(
            "[...document.querySelectorAll('#run figure img')].filter("
            "i => i.closest('figure').offsetParent !== null).map("
            "i => [i.id, i.dataset.loaded, i.naturalWidth])"
        )
        assert {i[0] for i in images} >= {"plot-progress", "plot-saxs-curve", "plot-saxs-params"}
        assert all(loaded == "1" and width > 100 for _, loaded, width in images), images
        # a selectable earlier curve: the plot is redrawn for it
        browser.eval(
            "(() => { const r = document.getElementById('curve-sel'); r.value = '5';"
            " r.dispatchEvent(new Event('input')); })()"
        )
        browser.wait_for(
            "(document.getElementById('plot-saxs-curve').dataset.shown || '').includes('sel=5')",
            20,
            "the I(q) plot with curve #5",
        )
        final_shot = browser.screenshot(ARTIFACTS / "monitor_saxs_completed.png")
        assert running_shot.stat().st_size > 20_000 and final_shot.stat().st_size > 20_000
        assert not browser.console, browser.console


def test_bad_and_missing_runs_show_a_message(browser, tmp_path):
    root = tmp_path / "outputs"
    (root / "corrupt").mkdir(parents=True)
    (root / "corrupt" / "run.json").write_text('{"format": "photonflow-run/1", "kind": "saxs", "sta')
    with MonitorServer([root], interval_s=0.5) as server:
        browser.navigate(server.url + "#run=no-such-run")
        text = browser.wait_for(
            "!document.getElementById('message').hidden && document.getElementById('message').textContent",
            20,
            "the unknown-run message",
        )
        assert "no run 'no-such-run'" in text
        assert browser.eval("document.getElementById('run').hidden")
        assert browser.eval("document.getElementById('status').dataset.state") == "ok"
        # a malformed #run= (a broken %-escape): a message, the page goes on polling, no script error
        browser.navigate(server.url + "#run=%E0%A4%A")
        text = browser.wait_for(
            "(m => m.includes('no run') && !m.includes('no-such-run') && m)("
            "document.getElementById('message').textContent)",
            20,
            "the malformed-id message",
        )
        assert "no run" in text and not browser.console, browser.console

        run_id = server.get_json("api/runs")["runs"][0]["id"]
        browser.navigate(server.url + f"#run={run_id}")
        text = browser.wait_for(
            f"document.getElementById('run').dataset.runId === {run_id!r} && "
            "document.getElementById('message').textContent",
            20,
            "the corrupt-run message",
        )
        assert "run.json" in text and "unreadable" in text
        browser.screenshot(ARTIFACTS / "monitor_corrupt_run.png")
        json.dumps(server.get_json(f"api/runs/{run_id}"))  # the data endpoint answers too
