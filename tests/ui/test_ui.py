"""The Airflow UI as a person uses it, in a real browser (Debian's chromium through Playwright,
headless): ``local_airflow standalone`` (what ``make airflow`` runs) on a free port, the log-in page
with the user and password file the README names, every DAG's trigger form (the Trigger button is
enabled with the defaults and submitting it starts a run), the demo DAG run from its form to
success, then the curation view (``/metaclip/``) on the demo pool: the curves, t, the top entries
and the lineage, and its API refusing requests without a token.

One Airflow for the whole module. Screenshots of every step are saved under the module's tmp
folder (printed at the end; ``--basetemp DIR`` keeps them where other pytest runs do not rotate
them away); ``METACLIP_DOCS_SCREENSHOT=1`` (a manual run, never CI) also copies the pool page's
screenshot, as the UI shows it, to ``docs/curation_view.png`` for the README.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest

from metaclip_tasks.core.artifacts import ArtifactStore
from metaclip_tasks.dev.airflow_api import ADMIN, all_healthy, api_ready, api_token
from metaclip_tasks.dev.local_airflow import password_file

REPO = Path(__file__).resolve().parents[2]  # the source checkout
from tests.dev.embedded_airflow import free_port, start_airflow

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = [
    pytest.mark.airflow,
    pytest.mark.ui,
    pytest.mark.timeout(1200),  # a test's share of the module's Airflow start or of the demo run (DEMO_TIMEOUT)
    pytest.mark.skipif(
        not (Path(sys.executable).parent / "airflow").exists(), reason="Airflow is not installed in this environment"
    ),
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason=f"no chromium at {CHROMIUM} (Debian's chromium: make system-packages)"
    ),
]
playwright_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")

DEMO = "metaclip_curation_demo"
DEMO_POOL = "demo"
DAGS = sorted(p.stem for p in (REPO / "dags").glob("metaclip_*.py"))
OTHER_DAGS = [d for d in DAGS if d != DEMO]
UI_TIMEOUT_MS = 60_000  # one UI step (a page, a form) with the other core busy
DEMO_TIMEOUT = 900  # seconds: the demo DAG (about a minute) on 2 cores, one of them busy elsewhere
FINISHED = {"success", "failed"}
playwright_api.expect.set_options(timeout=UI_TIMEOUT_MS)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None  # the 3xx is raised as an HTTPError


class Airflow:
    """The running ``local_airflow standalone``: its URLs, artifact store and REST API (with a token)."""

    def __init__(self, state: Path, port: int, process: subprocess.Popen) -> None:
        self.state, self.port, self.process = state, port, process
        self.base = f"http://127.0.0.1:{port}"
        self.store = ArtifactStore(state / "root")
        self._token: str | None = None

    @property
    def password(self) -> str:
        """The admin password, read from the file the README points to."""
        return json.loads(password_file(self.state).read_text())[ADMIN]

    def token(self) -> str:
        if self._token is None:
            self._token = api_token(self.port, self.password)
        return self._token

    def request(
        self, method: str, path: str, body: dict | None = None, token: str | None | bool = True, follow: bool = True
    ):
        """(status, parsed JSON or text) of ``path`` on the API server; ``token``: True (the admin's),
        a token, or None/False (none). HTTP errors are returned, not raised; ``follow=False``: a
        redirect too, as (status, its Location)."""
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {self.token() if token is True else token}"
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        opener = urllib.request.build_opener(*([] if follow else [_NoRedirect()]))
        try:
            with opener.open(request, timeout=60) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as e:
            if e.code in (301, 302, 303, 307, 308):
                return e.code, e.headers.get("Location", "")
            status, raw = e.code, e.read()
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode(errors="replace")

    def api(self, method: str, path: str, body: dict | None = None) -> dict:
        status, answer = self.request(method, f"/api/v2{path}", body)
        assert status in (200, 201), (method, path, status, answer)
        return answer

    def runs(self, dag_id: str) -> list[dict]:
        return self.api("GET", f"/dags/{dag_id}/dagRuns?limit=100")["dag_runs"]

    def logs(self, chars: int = 3000) -> str:
        parts = [(self.state / "supervisor.out").read_text(errors="replace")[-chars:]]
        for log in sorted((self.state / "logs").glob("*.log")):
            parts.append(f"--- {log.name}\n" + log.read_text(errors="replace")[-chars:])
        return "\n".join(parts)

    def wait(self, condition, timeout: float, what: str, every: float = 2, detail=None):
        """``condition()``'s first truthy value; fails with ``detail()`` and the services' logs after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                pytest.fail(
                    f"local_airflow standalone exited ({self.process.returncode}) before {what}:\n{self.logs()}"
                )
            value = condition()
            if value:
                return value
            if time.monotonic() > deadline:
                pytest.fail(
                    f"timed out after {timeout:.0f} s waiting for {what}:\n{detail() if detail else ''}\n{self.logs()}"
                )
            time.sleep(every)


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM the supervisor (it stops everything it started); SIGKILL all of it after 90 s."""
    if process.poll() is not None:
        return
    try:
        started = psutil.Process(process.pid).children(recursive=True)
    except psutil.Error:
        started = []
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=90)
    except subprocess.TimeoutExpired:
        for p in [psutil.Process(process.pid), *started]:
            try:
                p.kill()
            except psutil.Error:
                pass
        process.wait()


@pytest.fixture(scope="module")
def airflow(tmp_path_factory) -> Airflow:
    """``python -m metaclip_tasks.dev.local_airflow standalone`` (``make airflow``) on a free port and a
    state folder of its own, once every service heartbeats and every DAG is parsed."""
    state = tmp_path_factory.mktemp("airflow-ui")
    port = free_port()
    process, _ = start_airflow(
        state, port
    )  # as tests/dev/test_local_airflow.py starts it: free log-server ports, the shipped pools
    airflow = Airflow(state, port, process)
    try:
        airflow.wait(lambda: api_ready(port), 300, "the API server to answer")
        airflow.wait(lambda: all_healthy(port), 300, "every service to heartbeat")

        def parsed() -> bool:
            dags = airflow.api("GET", "/dags?limit=100")["dags"]
            return sorted(d["dag_id"] for d in dags) == DAGS

        airflow.wait(parsed, 300, f"the {len(DAGS)} DAGs to be parsed")
        yield airflow
    finally:
        _stop(process)
        print(f"\nUI test state and screenshots: {state}")


@pytest.fixture(scope="module")
def shots(airflow) -> Path:
    folder = airflow.state / "screenshots"
    folder.mkdir(exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def page(browser, airflow, shots):
    """A browser tab logged in through the UI's log-in page, as the README says: user admin, the
    password from ``<state>/airflow/admin-password.json``."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(UI_TIMEOUT_MS)
    page = context.new_page()
    page.goto(airflow.base + "/")
    page.wait_for_url(re.compile(r"/auth/login"))  # the UI wants a log-in
    page.screenshot(path=shots / "00-login.png")
    page.get_by_label("Username").fill(ADMIN)
    page.get_by_label("Password").fill(airflow.password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(airflow.base + "/")
    yield page
    context.close()


def test_the_rest_api_wants_a_token_and_the_health_endpoint_does_not(airflow: Airflow) -> None:
    assert airflow.request("GET", "/api/v2/dags", token=None)[0] == 401
    assert airflow.request("GET", "/api/v2/monitor/health", token=None)[0] == 200
    status, _ = airflow.request("POST", "/auth/token", {"username": ADMIN, "password": "wrong"}, token=None)
    assert status == 401
    assert airflow.request("GET", "/api/v2/dags")[0] == 200  # the admin's token
    # on SQLite the API server takes one writing request at a time (local_airflow.SerializedWrites)
    middlewares = [
        m["middleware"] for p in airflow.api("GET", "/plugins")["plugins"] for m in p["fastapi_root_middlewares"]
    ]
    assert "metaclip_tasks.dev.local_airflow.SerializedWrites" in middlewares


def test_log_in_shows_every_dag(page, airflow: Airflow, shots: Path) -> None:
    page.goto(airflow.base + "/dags")
    for dag_id in DAGS:
        playwright_api.expect(page.get_by_text(dag_id, exact=True).first).to_be_visible()
    page.screenshot(path=shots / "01-dags.png", full_page=True)


def _open_trigger_form(page, airflow: Airflow, dag_id: str, shots: Path):
    """The DAG's page, its Trigger button, the trigger form's dialog; the form's own Trigger button."""
    page.goto(f"{airflow.base}/dags/{dag_id}")
    page.get_by_role("button", name="Trigger").first.click()
    dialog = page.get_by_role("dialog")
    playwright_api.expect(dialog).to_be_visible()
    playwright_api.expect(dialog.get_by_role("heading", name=re.compile(rf"\b{dag_id}\b"))).to_be_visible()
    submit = dialog.get_by_test_id("trigger-dag-submit")
    playwright_api.expect(submit).to_be_visible()
    page.wait_for_timeout(500)  # the form validates its fields once rendered
    page.screenshot(path=shots / f"trigger-{dag_id}.png", full_page=True)
    return dialog, submit


def _submit(page, airflow: Airflow, dag_id: str, dialog, submit) -> dict:
    """Submit the form (as is: "Unpause on trigger" checked); the new manual run."""
    before = {r["dag_run_id"] for r in airflow.runs(dag_id)}
    playwright_api.expect(submit).to_be_enabled(timeout=20_000)  # the form is validated once rendered
    submit.click()
    playwright_api.expect(dialog).to_be_hidden()

    def created() -> dict | None:
        new = [r for r in airflow.runs(dag_id) if r["dag_run_id"] not in before and r["run_type"] == "manual"]
        return new[0] if new else None

    run = airflow.wait(created, 60, f"a run of {dag_id} created by the form")
    assert airflow.api("GET", f"/dags/{dag_id}")["is_paused"] is False  # "Unpause ... on trigger"
    return run


@pytest.mark.parametrize("dag_id", OTHER_DAGS)
def test_trigger_form_starts_a_run_with_the_defaults(page, airflow: Airflow, shots: Path, dag_id: str) -> None:
    """The Trigger button is enabled with the form's defaults, and submitting starts a run (it need
    not finish: on an empty artifact root most stop at their first check). The DAG is paused again
    and an unfinished run marked failed, so that nothing else runs beside the demo."""
    dialog, submit = _open_trigger_form(page, airflow, dag_id, shots)
    try:
        run = _submit(page, airflow, dag_id, dialog, submit)

        def started() -> str | None:
            state = airflow.api("GET", f"/dags/{dag_id}/dagRuns/{run['dag_run_id']}")["state"]
            return state if state != "queued" else None

        state = airflow.wait(started, 120, f"the scheduler to start {run['dag_run_id']} of {dag_id}")
        assert state in ("running", "success", "failed"), state
        page.goto(f"{airflow.base}/dags/{dag_id}/runs/{run['dag_run_id']}")
        page.wait_for_timeout(1000)
        page.screenshot(path=shots / f"run-{dag_id}.png", full_page=True)
    finally:
        if page.get_by_role("dialog").count():
            page.keyboard.press("Escape")
        airflow.api("PATCH", f"/dags/{dag_id}", {"is_paused": True})
        for r in airflow.runs(dag_id):
            if r["state"] not in FINISHED:
                airflow.api("PATCH", f"/dags/{dag_id}/dagRuns/{r['dag_run_id']}", {"state": "failed"})


@pytest.fixture(scope="module")
def demo_run(page, airflow: Airflow, shots: Path, wordnet) -> dict:
    """The demo DAG triggered from its form with the defaults, run to success (its metadata is
    MetaCLIP's WordNet entries: ``wordnet`` skips without Debian's wordnet-base)."""
    dialog, submit = _open_trigger_form(page, airflow, DEMO, shots)
    run = _submit(page, airflow, DEMO, dialog, submit)
    path = f"/dags/{DEMO}/dagRuns/{run['dag_run_id']}"

    def finished() -> dict | None:
        current = airflow.api("GET", path)
        return current if current["state"] in FINISHED else None

    def task_states() -> str:
        tasks = airflow.api("GET", f"{path}/taskInstances?limit=100")["task_instances"]
        return str({t["task_id"] + (f"[{t['map_index']}]" if t["map_index"] >= 0 else ""): t["state"] for t in tasks})

    began = time.monotonic()
    done = airflow.wait(
        finished, DEMO_TIMEOUT, f"the demo run {run['dag_run_id']} to finish", every=5, detail=task_states
    )
    print(f"\nthe demo DAG ran in {time.monotonic() - began:.0f} s")
    page.goto(f"{airflow.base}/dags/{DEMO}/runs/{run['dag_run_id']}")
    page.wait_for_timeout(2000)
    page.screenshot(path=shots / "run-demo.png", full_page=True)
    if done["state"] != "success":
        pytest.fail(f"the demo run ended {done['state']}: {task_states()}\n{airflow.logs()}")
    return done


def test_the_demo_runs_to_success_from_its_trigger_form(demo_run: dict) -> None:
    assert demo_run["state"] == "success"
    assert demo_run["run_type"] == "manual"


def _demo_artifacts(airflow: Airflow):
    """The demo pool's pool_counts and curated artifacts, as the run published them."""
    counts = [a for a in airflow.store.list("pool_counts") if a.params.get("pool") == DEMO_POOL]
    curated = [a for a in airflow.store.list("curated") if a.stats.get("pool") == DEMO_POOL]
    assert counts and curated, "the demo run published no pool_counts / curated artifact"
    return counts[-1], curated[-1]


def _text_of(page) -> str:
    """The visible text of the page and of its iframes (an external view may be embedded)."""
    texts = [page.inner_text("body")]
    for frame in page.frames[1:]:
        try:
            texts.append(frame.inner_text("body"))
        except playwright_api.Error:
            pass
    return "\n".join(texts)


def _pool_link(where, counts):
    """The link to the demo pool's page: by the pool's name in its URL or by its pool_counts version."""
    by_pool = where.locator(f"a[href*='/metaclip/pools/{DEMO_POOL}']")
    return by_pool.or_(where.get_by_role("link", name=counts.version, exact=True)).first


def _nav_entry(page):
    """The view's entry in the UI's navigation: in a menu of the side bar (Browse, Admin) or on it."""
    name = re.compile("curation", re.IGNORECASE)
    for menu in ("Browse", "Admin"):
        button = page.get_by_role("button", name=menu, exact=True)
        if button.count():
            button.first.click()
            item = page.get_by_role("menuitem", name=name).first
            try:
                item.wait_for(timeout=10_000)  # the menu lists the plugins' views once it has fetched them
                return item
            except playwright_api.TimeoutError:
                page.keyboard.press("Escape")
    top = page.locator("nav a[href^='/plugin/']").filter(has_text=name)
    return top.first if top.count() else None


def test_curation_view_in_the_ui_nav_and_on_the_demo_run(demo_run, page, airflow: Airflow, shots: Path) -> None:
    """The view as the UI embeds it: the nav entry opens the pools, a pool its charts; the demo run
    has a tab with the artifacts it published, linked to their pages."""
    counts, curated = _demo_artifacts(airflow)
    page.goto(airflow.base + "/")
    page.wait_for_load_state("networkidle")
    entry = _nav_entry(page)
    assert entry is not None, "the curation view has no entry in the UI's navigation"
    entry.click()
    page.wait_for_url(re.compile(r"/plugin/"))
    view = page.frame_locator("iframe").first
    playwright_api.expect(view.get_by_text(DEMO_POOL, exact=True).first).to_be_visible()
    page.screenshot(path=shots / "view-in-ui.png")
    _pool_link(view, counts).click()
    playwright_api.expect(view.locator(".js-plotly-plot, svg").first).to_be_visible()
    page.wait_for_timeout(2000)  # the charts drawn
    shot = shots / "view-pool-in-ui.png"
    page.screenshot(path=shot)
    if os.environ.get("METACLIP_DOCS_SCREENSHOT") == "1":  # a manual run only
        (REPO / "docs").mkdir(exist_ok=True)
        shutil.copyfile(shot, REPO / "docs" / "curation_view.png")

    page.goto(f"{airflow.base}/dags/{DEMO}/runs/{demo_run['dag_run_id']}")
    tab = page.locator("a[href*='/plugin/']").first  # a plugin's tab on the run (an external view)
    playwright_api.expect(tab).to_be_visible()
    tab.click()
    run_view = page.frame_locator("iframe").first
    for artifact in (curated, *counts.inputs("matched")):  # what the run's tasks returned, linked
        playwright_api.expect(run_view.get_by_role("link", name=artifact.version).first).to_be_visible()
    page.screenshot(path=shots / "view-demo-run-tab.png", full_page=True)


def test_curation_view_shows_the_demo_pool(demo_run, page, airflow: Airflow, shots: Path) -> None:
    """The pool's page: its three curves, t, the top entries and the lineage from the pairs to the
    curated subset."""
    counts, curated = _demo_artifacts(airflow)
    page.goto(airflow.base + "/metaclip/")
    assert DEMO_POOL in page.inner_text("body")
    page.screenshot(path=shots / "view-index.png", full_page=True)
    link = _pool_link(page, counts)
    playwright_api.expect(link).to_be_visible()
    link.click()
    page.wait_for_url(re.compile(rf"/metaclip/.*({DEMO_POOL}|{counts.version})"))
    page.wait_for_load_state("networkidle")
    playwright_api.expect(page.locator(".js-plotly-plot, svg").first).to_be_visible()
    text, html = page.inner_text("body"), page.content()
    page.screenshot(path=shots / "view-pool.png", full_page=True)

    plots = page.locator(".js-plotly-plot").count() or page.locator("svg:not(svg svg), img[src$='.svg']").count()
    assert plots >= 3, f"{plots} plots: the entry counts, the cumulative curve with t, the t / tail-ratio curve"
    t = counts.stats["t"]
    assert re.search(rf"\bt\s*[=:]?\s*({t}|{t:,})\b", text), f"t = {t} is not on the page"
    for entry, count in counts.stats["top_entries"][:5]:
        assert entry in text and (f"{count:,}" in text or str(count) in text), (entry, count)
    matched = counts.inputs("matched")
    for artifact in (counts, curated, counts.input("metadata"), *matched, *(m.input("pairs") for m in matched)):
        shown = artifact.version[:8] in text or artifact.version in html  # the version, or a link to it
        assert shown, f"the lineage lacks {artifact.stage} {artifact.version}"
    for stage in ("pairs", "matched", "pool_counts", "curated"):
        assert stage in text, stage


def test_curation_view_api_wants_a_token(demo_run, airflow: Airflow) -> None:
    """Every route of the view answers 401/403 without a token (a page may instead send the browser
    to the log-in page), and 200 with the admin's: the index, what it and the pool's page link to
    or load (pages, scripts), the JSON API the README names, and any route an OpenAPI schema lists
    (path parameters filled in with the demo pool's)."""
    counts, _ = _demo_artifacts(airflow)
    values = {
        "pool": DEMO_POOL,
        "pool_id": DEMO_POOL,
        "name": DEMO_POOL,
        "stage": counts.stage,
        "version": counts.version,
    }
    paths = {"/metaclip/", "/metaclip/api/pools", f"/metaclip/api/pool_counts/{counts.version}"}
    pages = ["/metaclip/"]  # then the pages it links to that name the demo pool's counts
    for page in pages:
        status, html = airflow.request("GET", page)
        assert status == 200 and isinstance(html, str) and DEMO_POOL in html, (page, status, str(html)[:300])
        for link in re.findall(r'(?:href|src)="([^"#?]+)', html):
            if link.startswith("/metaclip/"):
                paths.add(link)
                if page == "/metaclip/" and counts.version in link and link not in pages:
                    pages.append(link)
    assert len(pages) > 1, "the index links to no page of the demo pool's counts"
    status, schema = airflow.request("GET", "/metaclip/openapi.json")
    if status == 200 and isinstance(schema, dict):
        for route, methods in schema.get("paths", {}).items():
            if "get" in methods and set(re.findall(r"{(\w+)}", route)) <= set(values):
                paths.add("/metaclip" + re.sub(r"{(\w+)}", lambda m: values[m.group(1)], route))
    assert len(paths) > 5, paths
    for path in sorted(paths):
        without, answer = airflow.request("GET", path, token=None, follow=False)
        login = without in (302, 303, 307) and "/auth/login" in str(answer)
        assert without in (401, 403) or login, (path, without, str(answer)[:300])
        with_token, answer = airflow.request("GET", path)
        assert with_token == 200, (path, with_token, str(answer)[:300])


def test_a_publishing_task_links_to_its_artifact_page(demo_run, airflow: Airflow) -> None:
    """The view's extra link on a task instance of the demo run points at the artifact it published."""
    path = f"/dags/{DEMO}/dagRuns/{demo_run['dag_run_id']}/taskInstances/count_and_balance/links"
    links = json.dumps(airflow.api("GET", path))
    found = re.findall(r"/metaclip/artifacts/(\w+)/(\w+)", links)
    assert found, links
    stage, version = found[0]
    assert airflow.store.require(stage, version).version == version
    status, _ = airflow.request("GET", f"/metaclip/artifacts/{stage}/{version}")
    assert status == 200
