"""The dashboard: its files are public, local and served under a strict Content-Security-
Policy (in-process, fast); and in Debian's chromium, against a real secure federation, the
page follows a live session with the admin token and stops it (selenium, slow).

``STRATA_SCREENSHOT=docs/dashboard.png`` makes the browser test save a screenshot of the
live page there (off by default, so tests never rewrite tracked files).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from stratafl.controller.rest.app import create_api
from stratafl.dashboard import CONTENT_SECURITY_POLICY, static_files
from stratafl.data.fashion_mnist import FILES, SYSTEM_DIR
from stratafl.launch.federation import FederationSpec, LocalFederation
from stratafl.settings import SessionConfig
from stratafl.status import SessionStatus
from tests.support.asgi import SyncASGI
from tests.support.controllers import open_controller
from tests.support.marks import HEAVY
from tests.support.paths import DASHBOARD_APP

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
NO_BROWSER = (
    "Debian's chromium is missing: apt-get install chromium chromium-driver "
    "(scripts/setup.sh dev does it); CI requires it"
)
NO_DATA = "needs `apt-get install dataset-fashion-mnist` (scripts/setup.sh does it); CI requires it"
WAIT_SECONDS = 90.0
T = TypeVar("T")


# -- the files, in-process ------------------------------------------------------------------


@pytest.fixture
def api(tmp_path: Path) -> Iterator[SyncASGI]:
    with open_controller(tmp_path, secure=True) as controller:
        client = SyncASGI(create_api(controller))
        yield client
        client.close()


def test_the_page_and_its_files_are_public_and_served_under_a_strict_csp(api):
    files = static_files()
    assert {"/", "/dashboard/app.js", "/dashboard/style.css", "/dashboard/plotly.min.js"} <= set(
        files
    )
    for url, file in files.items():
        response = api.get(url)  # no token
        assert response.status_code == 200, (url, response.text[:200])
        assert response.headers["content-type"] == file.media_type
        assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.content == file.source.read_bytes()
    policy = dict(part.split(" ", 1) for part in CONTENT_SECURITY_POLICY.split("; "))
    assert policy["script-src"] == "'self'"  # no inline script, no eval, no other origin
    assert policy["connect-src"] == "'self'" and policy["default-src"] == "'none'"
    # the page holds no data: the API behind it still needs the admin token
    assert api.get("/api/v1/sessions").status_code == 401


def test_plotly_comes_from_the_plotly_wheel_and_is_sent_gzipped(api):
    import plotly

    wheel = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    response = api.get("/dashboard/plotly.min.js", headers={"accept-encoding": "gzip"})
    assert response.headers["content-encoding"] == "gzip"
    assert response.content == wheel.read_bytes()  # httpx undid the gzip
    assert int(response.headers["content-length"]) < wheel.stat().st_size / 2
    plain = api.get("/dashboard/plotly.min.js", headers={"accept-encoding": "identity"})
    assert "content-encoding" not in plain.headers and plain.content == wheel.read_bytes()


def test_everything_the_page_loads_is_local_and_served(api):
    """Offline: no CDN, no other origin; every script and import resolves on the controller."""
    page = api.get("/").text
    scripts = [url for url in static_files() if url.endswith(".js") and "plotly" not in url]
    ours = [page] + [api.get(url).text for url in scripts]
    for text in ours:
        assert not re.search(r"https?://", text), "the dashboard must not load anything remote"
    references = re.findall(r'(?:src|href)="(/[^"]*)"', page)
    for url in scripts:
        imported = re.findall(r'from "\./([a-z]+\.js)"', api.get(url).text)
        references += [f"/dashboard/{name}" for name in imported]
    assert "/dashboard/plotly.min.js" in references
    assert set(scripts) <= set(references)  # each of our scripts is loaded: none is dead
    for url in references:
        assert api.get(url).status_code == 200, url
    assert "<script>" not in page and "style=" not in page  # nothing inline


def test_an_unknown_script_is_a_404_that_lists_the_scripts(api):
    response = api.get("/dashboard/nope.js")
    assert response.status_code == 404
    assert response.json()["error"] == "NotFoundError"
    assert "/dashboard/app.js" in response.json()["detail"]


# -- the page in a real browser ---------------------------------------------------------------


def _required(missing: bool, reason: str) -> None:
    if missing:
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[object]:
    """Headless Debian chromium through its own chromedriver (no Selenium Manager)."""
    _required(not (CHROMEDRIVER.exists() and CHROMIUM.exists()), NO_BROWSER)
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.add_argument("--window-size=1400,1000")
    options.accept_insecure_certs = True  # the federation's own CA, unknown to the browser
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    driver.execute_cdp_cmd(
        "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
    )
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def slow_federation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalFederation]:
    """Four clients on two combiners, secure, each training task slowed by one second."""
    _required(not all((SYSTEM_DIR / name).is_file() for name in FILES.values()), NO_DATA)
    monkeypatch.setenv("STRATA_TEST_TRAIN_SECONDS", "1")
    spec = FederationSpec(
        app=DASHBOARD_APP, clients=4, combiners=2, partition="dirichlet:0.5", workdir=tmp_path
    )
    with LocalFederation(spec) as federation:
        federation.wait_for_clients(4)
        federation.upload_seed_model()
        yield federation


def _until(what: str, probe: Callable[[], T | None]) -> T:
    """Poll ``probe`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.2)
    pytest.fail(f"gave up waiting for {what}")


def _points(driver) -> int:
    """How many rounds the accuracy plot shows (the x values of its first trace)."""
    return int(
        driver.execute_script(
            "const plot = document.getElementById('accuracy-plot');"
            "return plot.data && plot.data[0] ? plot.data[0].x.length : 0;"
        )
    )


def _text(driver, element_id: str) -> str:
    return str(driver.find_element("id", element_id).text)


def _screenshot(driver, path: str) -> None:
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1400, int(height) + 40)
    time.sleep(1.0)  # plotly redraws at the new width
    driver.save_screenshot(path)
    driver.set_window_size(1400, 1000)


IN_PAGE_CHECKS = """
const done = arguments[arguments.length - 1];
(async () => {
  const stream = await import("/dashboard/stream.js");
  const api = await import("/dashboard/api.js");
  const parser = new stream.EventParser();
  const events = [];
  const text = ': keepalive\\r\\nid: 7\\r\\nevent: round_finished\\r\\n'
    + 'data: {"a":\\r\\ndata: 1}\\r\\n\\r\\n';
  for (const piece of text) events.push(...parser.feed(piece));
  const missing = await stream.follow("no-such-session", {
    onOpen() {}, onEvent() {}, signal: new AbortController().signal,
  });
  // an accepted update the rule left out is marked L, with the rule's reason on hover
  const panels = await import("/dashboard/panels.js");
  panels.showClients(
    [{id: "client-x", combiner_id: "combiner-0", status: "connected", last_seen: 0}],
    [{number: 1, outcomes: [
      {client_id: "client-x", status: "ok", left_out: "krum keeps the one update"},
      {client_id: "client-x", status: "ok", left_out: ""},
    ]}],
  );
  const marks = [...document.querySelectorAll("#clients-table tbody .outcomes span")];
  const shown = marks.map((mark) => [mark.textContent, mark.className, mark.title]);
  const real = window.fetch;
  const answers = [[{}, {}], {items: [{}, {}], next: "c1"}, {items: [{}], next: null}];
  window.fetch = async () => new Response(JSON.stringify(answers.shift()));
  try {
    const bare = await api.pages("/api/v1/x");
    const paged = await api.pages("/api/v1/x");
    done({events, missing, bare: bare.length, paged: paged.length, shown});
  } finally {
    window.fetch = real;
  }
})().catch((error) => done({error: String(error)}));
"""


def _in_page_checks(driver) -> dict[str, object]:
    """The page's SSE parser (fed one character at a time, CRLF lines), its fallback when
    there is no stream, and `pages` with both list shapes, run in the page itself."""
    driver.set_script_timeout(30)
    return dict(driver.execute_async_script(IN_PAGE_CHECKS))


@pytest.mark.slow
@pytest.mark.browser
@HEAVY
def test_the_dashboard_follows_a_live_session_and_stops_it(slow_federation, browser, tmp_path):
    federation, driver = slow_federation, browser
    api = federation.client
    assert federation.admin_token
    session = api.start_session(
        SessionConfig(rounds=100, min_clients=2, local_epochs=1, round_timeout=60)
    )

    driver.get(f"{federation.url}/")
    _until(
        "the page to ask for the token",
        lambda: "needs the admin token" in _text(driver, "connection"),
    )
    driver.find_element("id", "token-input").send_keys(federation.admin_token)
    driver.find_element("id", "token-save").click()
    _until(
        "the running session to be picked",
        lambda: driver.find_element("id", "session-picker").get_attribute("value") == session.id,
    )
    assert driver.execute_script("return sessionStorage.length") == 1  # kept in this tab only

    seen = _until("a first round on the accuracy plot", lambda: _points(driver))
    _until("more rounds on the accuracy plot", lambda: _points(driver) >= seen + 2)
    assert "running" in _text(driver, "session-status")
    assert len(driver.find_elements("css selector", "#combiners-table tbody tr")) == 2
    assert len(driver.find_elements("css selector", "#clients-table tbody tr")) == 4
    _until(
        "the fairness plot",
        lambda: driver.execute_script(
            "return document.getElementById('fairness-plot').data[2].y.length > 0"
        ),
    )
    if os.environ.get("STRATA_SCREENSHOT"):
        _screenshot(driver, os.environ["STRATA_SCREENSHOT"])

    driver.find_element("id", "stop-session").click()
    ended = _until(
        "the session to end",
        lambda: (s := api.session(session.id)).status != SessionStatus.RUNNING and s,
    )
    assert ended.status == SessionStatus.STOPPED
    _until("the page to show it stopped", lambda: "stopped" in _text(driver, "session-status"))
    assert not driver.find_element("id", "stop-session").is_enabled()
    scored = [r for r in api.rounds(session.id) if r.validation.mean("accuracy") is not None]
    _until("every scored round on the plot", lambda: _points(driver) == len(scored))

    # each model of the trail downloads with the token (newest first)
    newest = max(api.models(session.id), key=lambda m: m.created_at)
    # (clicked in the page: a table redrawn between a find and a click would be stale)
    driver.execute_script("document.querySelector('#model-trail tbody button').click()")
    saved = tmp_path / "downloads" / f"{newest.id}.safetensors"
    _until(
        "the model download", lambda: saved.is_file() and saved.stat().st_size == newest.size_bytes
    )

    # the start form runs a new session, which the page follows to its end
    rounds = driver.find_element("id", "start-rounds")
    rounds.clear()
    rounds.send_keys("2")
    driver.find_element("id", "start-session").click()
    _until(
        "the new session to finish on the page",
        lambda: "finished" in _text(driver, "session-status"),
    )
    newer = max(api.sessions(), key=lambda s: s.created_at)
    assert newer.id != session.id and newer.status == SessionStatus.FINISHED
    assert driver.find_element("id", "session-picker").get_attribute("value") == newer.id
    assert _points(driver) == 2

    assert _in_page_checks(driver) == {
        "events": [{"id": "7", "kind": "round_finished", "data": '{"a":\n1}'}],
        "missing": "missing",  # no stream for that id: the page falls back to polling
        "bare": 2,  # a controller that answers a bare list rather than {items, next}
        "paged": 3,  # two pages, followed through `next`
        "shown": [
            ["L", "state-left-out", "round 1: left out (krum keeps the one update)"],
            ["✓", "state-ok", "round 1: ok"],
        ],
    }

    refused = [
        entry["message"]
        for entry in driver.get_log("browser")
        if "Content Security Policy" in entry["message"] or "Refused to" in entry["message"]
    ]
    assert refused == []
