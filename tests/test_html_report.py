"""The HTML report as a person sees it (issue 21): a real run over a shaped link writes it, headless Chromium opens
the file with the network cut off, and the plots are drawn — lanes for the roles, a bar per phase, an arrow per
message, bytes per link — from the file alone (plotly.js inlined, nothing fetched)."""

import json
import os
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from run_scenario import cli
from scenarios import SCENARIO_DIR

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"

if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
    pytest.skip("Debian's chromium and chromium-driver are missing (bash .ci/setup.sh installs them as root)",
                allow_module_level=True)


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager has nothing to fetch: the paths are given
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1800",
                "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=127.0.0.1:9"):  # no network at all
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def drawn(browser, script):
    return browser.execute_script(script)


@pytest.mark.slow
def test_a_runs_html_report_draws_its_timeline_arrows_and_bytes_offline(tmp_path, browser):
    scenario = tmp_path / "explained.yaml"
    scenario.write_text((SCENARIO_DIR / "denied_bin_found.yaml").read_text() + "network: wan\n")
    html, report = tmp_path / "report.html", tmp_path / "report.json"
    result = CliRunner().invoke(cli, ["run", str(scenario), "--fhe", "simulate", "--report-html", str(html),
                                      "--report-json", str(report)])
    assert result.exit_code == 0, result.output
    text = html.read_text()
    # plotly.js is in the file itself (its bundle names a CDN only for geographic maps' topojson, unused here)
    assert not re.search(r"<script[^>]*\ssrc=", text) and "plotly.js v" in text and len(text) > 3_000_000
    data = json.loads(report.read_text())
    between = [m for m in data["messages"] if "runner" not in (m["sender"], m["receiver"])]

    browser.get(html.as_uri())
    assert "denied_bin_found: PASSED" in browser.find_element("tag name", "h1").text
    plots = drawn(browser, "return document.querySelectorAll('.js-plotly-plot .main-svg').length")
    assert plots >= 3, plots  # timeline, seconds per phase, bytes per link (each has its main svg drawn)
    lanes = drawn(browser, "return Array.from(document.querySelectorAll('.js-plotly-plot')[0]"
                           ".querySelectorAll('.ytick text')).map(t => t.textContent)")
    assert set(lanes) == {"user", "bank", "agency", "evaluator"}, lanes
    bars = drawn(browser, "return document.querySelectorAll('.js-plotly-plot')[0]"
                          ".querySelectorAll('.barlayer .point path').length")
    windows = sum(len(s["detail"].get("phases", [])) or 1 for s in data["steps"])
    outputs = sum(m["type"] == "OUTPUT" for m in data["messages"])  # one FHE run each, in the evaluator's lane
    assert outputs >= 4 and bars == windows + outputs, (bars, windows, outputs)  # and every phase window a bar
    arrows = drawn(browser, "return document.querySelectorAll('.js-plotly-plot')[0]"
                            ".querySelectorAll('.annotation-arrow-g').length")
    assert arrows == len(between) > 20, (arrows, len(between))
    links = drawn(browser, "return Array.from(document.querySelectorAll('.js-plotly-plot')[2]"
                           ".querySelectorAll('.ytick text')).map(t => t.textContent)")
    assert "user -> evaluator" in links and "evaluator -> user" in links, links
    table = browser.find_element("css selector", "table").text
    assert "key upload" not in table and "run user" in table and "explain user" in table  # simulate: no keys
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "html_report.png"))


@pytest.mark.slow
def test_a_latency_distribution_page_draws_one_box_per_series(tmp_path, browser):
    """What load and bench --report-html write, from a real bench --network --quick figure file's shape: here the
    page is written from measured round trips through the forwarder (bench/network.py, 10 each)."""
    from bench.distributions import latency_series
    from bench.network import round_trips
    from simulation.html_report import write_distributions

    rows = round_trips((20, 50), count=10, log=lambda _: None)
    series = latency_series({"round_trips": rows})
    assert list(series) == ["round trip added at 20 ms one way", "round trip added at 50 ms one way"]
    page = tmp_path / "latency.html"
    write_distributions(page, "round trips", series)
    browser.get(page.as_uri())
    boxes = drawn(browser, "return document.querySelectorAll('.js-plotly-plot .boxlayer .trace').length")
    points = drawn(browser, "return document.querySelectorAll('.js-plotly-plot .boxlayer .point').length")
    assert boxes == 2 and points == 20, (boxes, points)
    assert "round trip added at 50 ms one way" in browser.find_element("css selector", "table").text
