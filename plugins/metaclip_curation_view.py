"""The curation view: a pool's counts, t and curated size, and the artifacts' lineage, in the Airflow UI.

A FastAPI app mounted by the API server at ``/metaclip`` serves JSON (``/metaclip/api/...``),
server-rendered pages and its own copy of plotly.min.js (from the plotly package: no CDN, no
network).  The UI links it with ``external_views`` rather than ``react_apps``: the pages are
plain HTML that the app itself renders (Jinja2, autoescaped), so an iframe is all the UI needs,
with no JavaScript bundle to build or ship.  A mounted app gets no authentication by itself, so
every route (pages, JSON, the script) depends on Airflow's access checks: the user (the UI's
``_token`` cookie, which the iframe sends, or an ``Authorization: Bearer`` token) may see the
website and read the runs of every curation DAG, since the artifact store is the output of all of
them; a run's tab also needs that DAG's XComs.  Tasks that publish an artifact get a link to its
page: a global operator extra link, resolved by the API server from the task's return value.
The app is built on first use, so workers that load plugins never import the API server's modules.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

import jinja2
from airflow.configuration import conf
from airflow.plugins_manager import AirflowPlugin
from airflow.sdk import BaseOperatorLink
from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse

from metaclip_tasks.core.artifacts import ArtifactStore
from metaclip_tasks.core.errors import CurationError
from metaclip_tasks.core.settings import artifact_root
from metaclip_tasks.ui import curation_view as view

CURATION_DAGS = (
    "metaclip_balance",
    "metaclip_curation_demo",
    "metaclip_download",
    "metaclip_match_snapshot",
    "metaclip_metadata",
    "metaclip_pool_counts",
    "metaclip_t_ablation",
    "metaclip_train",
)
BASE = urlsplit(conf.get("api", "base_url", fallback="") or "").path.rstrip("/")  # the API server's path prefix
PLOTLY_JS = Path(__import__("plotly").__file__).parent / "package_data" / "plotly.min.js"

router = APIRouter()  # everything but a run's tab
runs = APIRouter()  # a DAG run's tab: that DAG's XComs too


def _base(request: Request) -> str:
    """The API server's path prefix as this request reached the app (links in payloads start with it)."""
    return request.scope.get("root_path", "").removesuffix(view.PREFIX)


def _store() -> ArtifactStore:
    return ArtifactStore(artifact_root())


# -- JSON ----------------------------------------------------------------------------------------


@router.get("/api/pools")
def api_pools(request: Request) -> list[dict[str, Any]]:
    return view.pools(_store(), _base(request))


@router.get("/api/pool_counts/{version}")
def api_pool(version: str, request: Request) -> dict[str, Any]:
    return view.pool_payload(artifact_root(), version, _base(request))


@router.get("/api/pool_counts/{version}/distribution")
def api_distribution(version: str) -> dict[str, Any]:
    return view.distribution(view.load_pool(artifact_root(), version))


@router.get("/api/pool_counts/{version}/cumulative")
def api_cumulative(version: str, t: int | None = Query(None, ge=1)) -> dict[str, Any]:
    return view.cumulative(view.load_pool(artifact_root(), version), t)


@router.get("/api/pool_counts/{version}/t_curve")
def api_t_curve(version: str, request: Request) -> dict[str, Any]:
    pool = view.load_pool(artifact_root(), version)
    return view.t_curve(pool, view.curated_points(_store(), version, _base(request)))


@router.get("/api/pool_counts/{version}/at")
def api_at(version: str, t: int = Query(..., ge=1)) -> dict[str, Any]:
    return view.at_t(view.load_pool(artifact_root(), version), t)


@router.get("/api/pool_counts/{version}/top")
def api_top(
    version: str, t: int | None = Query(None, ge=1), k: int = Query(view.TOP_K, ge=1, le=1000)
) -> dict[str, Any]:
    return view.top_entries(view.load_pool(artifact_root(), version), t, k)


@router.get("/api/pool_counts/{version}/ablation")
def api_ablation(version: str, request: Request) -> dict[str, Any] | None:
    view.check_ref(view.POOL_COUNTS, version)
    return view.ablation(_store(), version, _base(request))


@router.get("/api/artifacts/{stage}/{version}")
def api_artifact(stage: str, version: str, request: Request) -> dict[str, Any]:
    store = _store()
    artifact = view.require(store, stage, version)
    return {**view.summary(artifact, _base(request)), "lineage": view.lineage(store, artifact, _base(request))}


@router.get("/static/plotly.min.js")
def plotly_js() -> FileResponse:
    return FileResponse(PLOTLY_JS, media_type="text/javascript", headers={"Cache-Control": "private, max-age=86400"})


# -- pages ---------------------------------------------------------------------------------------


def _number(value: Any, spec: str = ",") -> str:
    """A number for a table cell; anything else as text (escaped by the template)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or (isinstance(value, float) and not math.isfinite(value))
    ):
        return "-" if value is None else str(value)
    return format(value, spec)


TEMPLATES = jinja2.Environment(
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    loader=jinja2.DictLoader(
        {
            "base.html": """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{% block title %}{% endblock %} - MetaCLIP curation</title>
<style>
body { font: 14px/1.45 system-ui, sans-serif; margin: 1rem 1.5rem; color: #222; }
table { border-collapse: collapse; margin: .5rem 0 1rem; } td, th { border-bottom: 1px solid #ddd; padding: .2rem .6rem; text-align: left; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; } code, pre { font-size: 12px; }
.chart { width: 100%; max-width: 960px; height: 380px; } .control { margin: .5rem 0; padding: .5rem; background: #f4f6f8; max-width: 940px; }
.control output { font-weight: 600; margin-right: 1.2rem; } nav a { margin-right: 1rem; }
</style>{% block head %}{% endblock %}</head>
<body><nav><a href="{{ base }}/metaclip/">MetaCLIP curation view</a></nav>{% block body %}{% endblock %}</body></html>""",
            "index.html": """{% extends "base.html" %}{% block title %}Pools{% endblock %}{% block body %}
<h1>Pools and their entry counts</h1>
{% for pool in pools %}<h2>{{ pool.pool }}</h2>
<table><tr><th>pool_counts</th><th>created</th><th class="n">t</th><th class="n">tail ratio</th><th class="n">target</th>
<th class="n">entries</th><th class="n">matches</th><th>snapshots</th></tr>
{% for a in pool.artifacts %}<tr><td><a href="{{ a.url }}">{{ a.version }}</a> (<a href="{{ a.artifact_url }}">manifest</a>)</td><td>{{ a.created }}</td>
<td class="n">{{ num(a.t) }}</td><td class="n">{{ num(a.tail_ratio, '.4f') }}</td><td class="n">{{ a.target_tail_ratio }}</td>
<td class="n">{{ num(a.entries) }}</td><td class="n">{{ num(a.matches) }}</td><td>{{ a.snapshots|join(', ') }}</td></tr>{% endfor %}</table>
{% else %}<p>No pool_counts artifact under <code>{{ root }}</code> yet: run the demo or <code>metaclip_pool_counts</code>.</p>{% endfor %}
{% endblock %}""",
            "lineage.html": """<table><tr><th>stage</th><th>version</th><th>created</th><th>made from</th><th></th></tr>
{% for a in lineage %}<tr><td>{{ a.stage }}</td><td><a href="{{ a.url }}">{{ a.version }}</a></td><td>{{ a.created }}</td>
<td>{% for i in a.inputs %}{{ i.stage }} {{ i.version }}{% if not loop.last %}, {% endif %}{% endfor %}</td>
<td>{{ {'self': 'this artifact', 'input': '', 'output': 'made from it'}[a.relation] }}</td></tr>{% endfor %}</table>""",
            "pool.html": """{% extends "base.html" %}{% block title %}{{ a.params.pool }} {{ a.version }}{% endblock %}
{% block head %}<script src="{{ base }}/metaclip/static/plotly.min.js"></script>{% endblock %}{% block body %}
<h1>Pool {{ a.params.pool }}: entry counts <a href="{{ a.url }}">{{ a.version }}</a></h1>
<p>{{ num(a.stats.entries) }} entries, {{ num(a.stats.matches) }} matches in {{ a.stats.snapshots|join(', ') }};
t = <b id="pool-t">{{ num(a.stats.t) }}</b> (target tail ratio {{ a.params.target_tail_ratio }}, reached {{ num(a.stats.tail_ratio, '.4f') }}),
{{ num(a.stats.head_entries) }} head entries (count &ge; t). Created {{ a.created }}.</p>
<h2>How t, the counts and the curated size relate</h2>
<div class="control"><label>t <input type="range" id="t-slider" min="0" max="1000" step="1" style="width: 24rem"></label>
<input type="number" id="t-input" min="1" step="1" style="width: 8rem"><br>
tail ratio <output id="t-ratio"></output> expected matches kept &Sigma; min(count, t) <output id="t-expected"></output>
head entries <output id="t-head"></output> <span id="t-exact"></span>
<br><small>A pair matching several entries is kept once, so the curated pairs are at most the matches kept;
the curated subsets made from this pool are the measured points.</small></div>
<div id="t-curve" class="chart"></div>
<h2>Cumulative matches from tail to head (Fig. 2)</h2><div id="cumulative" class="chart"></div>
<h2>Entry-count distribution</h2><div id="distribution" class="chart"></div>
<h2>Top entries at t = {{ num(top.t) }} (Table 3)</h2>
<table><tr><th class="n">#</th><th>entry</th><th class="n">count</th><th class="n">balanced count</th><th class="n">keep probability</th></tr>
{% for r in top.rows %}<tr><td class="n">{{ r.rank }}</td><td>{{ r.entry }}</td><td class="n">{{ num(r.count) }}</td>
<td class="n">{{ num(r.balanced) }}</td><td class="n">{{ num(r.keep_probability, '.4g') }}</td></tr>{% endfor %}</table>
{% if ablation %}<h2>t ablation (<a href="{{ ablation.url }}">{{ ablation.version }}</a>)</h2>
<table><tr><th class="n">t</th><th class="n">tail ratio</th><th class="n">curated pairs</th><th class="n">expected</th><th class="n">downloaded</th>
<th class="n">zero-shot top-1</th><th class="n">text&rarr;image R@5</th><th>curated</th></tr>
{% for r in ablation.rows %}<tr><td class="n">{{ num(r.t) }}</td><td class="n">{{ num(r.tail_ratio, '.4f') }}</td><td class="n">{{ num(r.curated) }}</td>
<td class="n">{{ num(r.expected, ',.1f') }}</td><td class="n">{{ num(r.downloaded) }}</td><td class="n">{{ num(r.zero_shot_top1, '.3f') }}</td>
<td class="n">{{ num(r['text_to_image_R@5'], '.3f') }}</td><td><a href="{{ r.url }}">{{ r.version }}</a></td></tr>{% endfor %}</table>
<div id="ablation" class="chart"></div>{% endif %}
<h2>Lineage</h2>{% include "lineage.html" %}
<script type="application/json" id="payload">{{ payload|tojson }}</script>
<script>{{ script|safe }}</script>{% endblock %}""",
            "artifact.html": """{% extends "base.html" %}{% block title %}{{ a.stage }} {{ a.version }}{% endblock %}{% block body %}
<h1>{{ a.stage }} {{ a.version }}</h1>
{% if a.pool_url %}<p><a href="{{ a.pool_url }}">Charts of this pool's counts, t and curated size</a></p>{% endif %}
<table><tr><th>URI</th><td><code>{{ a.uri }}</code></td></tr><tr><th>created</th><td>{{ a.created }}</td></tr>
<tr><th>package</th><td>{{ a.package }}</td></tr><tr><th>files</th><td>{{ num(a.files) }} ({{ num(a.bytes) }} bytes)</td></tr></table>
<h2>Parameters</h2><pre>{{ params }}</pre><h2>Stats</h2><pre>{{ stats }}</pre>
<h2>Lineage</h2>{% include "lineage.html" %}{% endblock %}""",
            "run.html": """{% extends "base.html" %}{% block title %}{{ dag_id }} {{ run_id }}{% endblock %}{% block body %}
<h1>Artifacts of {{ dag_id }} / {{ run_id }}</h1>
{% if published %}<table><tr><th>task</th><th>stage</th><th>version</th><th></th></tr>
{% for p in published %}<tr><td>{{ p.task }}</td><td>{{ p.stage }}</td><td><a href="{{ p.url }}">{{ p.version }}</a></td>
<td>{% if p.pool_url %}<a href="{{ p.pool_url }}">counts, t and curated size</a>{% endif %}</td></tr>{% endfor %}</table>
{% else %}<p>No task of this run has published an artifact (yet).</p>{% endif %}{% endblock %}""",
        }
    ),
)
TEMPLATES.globals["num"] = _number

POOL_SCRIPT = """
const P = JSON.parse(document.getElementById("payload").textContent);
const base = P.base, version = P.artifact.version, C = P.t_curve;
const asText = s => String(s).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");  // plotly parses a little HTML
const fmt = n => Number(n).toLocaleString("en-US");
const vline = (x, name, dash) => ({type: "line", xref: "x", yref: "paper", x0: x, x1: x, y0: 0, y1: 1, line: {dash: dash || "dot", color: "grey"}, name});
const layout = (x, y, extra) => Object.assign({margin: {t: 20, r: 60}, xaxis: x, yaxis: y, legend: {orientation: "h"}}, extra || {});
const D = P.distribution;
Plotly.newPlot("distribution", [{x: D.rank, y: D.count, mode: "lines", name: "count", text: D.entry.map(asText),
  hovertemplate: "rank %{x:,}: %{text}<br>%{y:,} matches<extra></extra>"}],
  layout({type: "log", title: {text: "entries sorted by count (rank)"}}, {type: "log", title: {text: "matches"}},
         {shapes: [vline(D.head_entries + 0.5)], annotations: [{x: Math.log10(D.head_entries + 0.5), yref: "paper", y: 1, text: "t = " + fmt(D.t), showarrow: false}]}));
const U = P.cumulative;
Plotly.newPlot("cumulative", [
  {x: U.position, y: U.raw, mode: "lines", name: "raw / unbalanced (t = inf)"},
  {x: U.position, y: U.balanced, mode: "lines", name: "balanced (t = " + fmt(U.t) + ")"}],
  layout({title: {text: "entries sorted by count, tail to head"}}, {type: "log", title: {text: "cumulative matches"}},
         {shapes: [vline(U.tail_entries + 0.5)], annotations: [{x: U.tail_entries + 0.5, yref: "paper", y: 1, text: "tail | head at t = " + fmt(U.t), showarrow: false}]}));
const measured = C.curated.filter(c => c.t && c.kept != null);
Plotly.newPlot("t-curve", [
  {x: C.t, y: C.tail_ratio, mode: "lines", name: "tail ratio", line: {shape: "hv"}},
  {x: C.t, y: C.expected_matches, mode: "lines", name: "expected matches kept", yaxis: "y2", line: {shape: "hv"}},
  {x: measured.map(c => c.t), y: measured.map(c => c.kept), mode: "markers", name: "curated pairs (measured)", yaxis: "y2",
   text: measured.map(c => c.version), hovertemplate: "t = %{x:,}: %{y:,} pairs (%{text})<extra></extra>"}],
  layout({type: "log", title: {text: "t"}}, {title: {text: "tail ratio"}, range: [0, 1]},
         {yaxis2: {overlaying: "y", side: "right", type: "log", title: {text: "matches / pairs"}}, shapes: [vline(C.pool_t, "pool t", "dash")]}));
if (P.ablation && P.ablation.rows.length) {
  const R = P.ablation.rows, scored = R.filter(r => r.zero_shot_top1 != null);
  Plotly.newPlot("ablation", [{x: R.map(r => r.t), y: R.map(r => r.curated), mode: "lines+markers", name: "curated pairs"},
    {x: scored.map(r => r.t), y: scored.map(r => r.zero_shot_top1), mode: "lines+markers", name: "zero-shot top-1", yaxis: "y2"}],
    layout({type: "log", title: {text: "t"}}, {title: {text: "curated pairs"}}, {yaxis2: {overlaying: "y", side: "right", title: {text: "zero-shot top-1"}}}));
}
const tMax = C.max_count + 1, slider = document.getElementById("t-slider"), input = document.getElementById("t-input");
const toSlider = t => Math.round(1000 * Math.log(t) / Math.log(tMax)), fromSlider = s => Math.max(1, Math.round(Math.exp(s / 1000 * Math.log(tMax))));
function show(v, exact) {
  document.getElementById("t-ratio").textContent = v.tail_ratio.toFixed(4);
  document.getElementById("t-expected").textContent = fmt(v.expected_matches) + " of " + fmt(C.matches);
  document.getElementById("t-head").textContent = fmt(v.head_entries);
  document.getElementById("t-exact").textContent = exact ? "" : "(from the curve)";
}
function fromCurve(t) {  // the step function at the nearest curve point at or below t
  let lo = 0, hi = C.t.length - 1;
  while (lo < hi) { const mid = (lo + hi + 1) >> 1; if (C.t[mid] <= t) lo = mid; else hi = mid - 1; }
  const head = C.head_entries[lo], mass = C.tail_mass[lo];
  return {tail_ratio: mass / C.matches, expected_matches: mass + t * head, head_entries: head};
}
let pending;
function setT(t, from) {
  if (from !== "input") input.value = t;
  if (from !== "slider") slider.value = toSlider(t);
  show(fromCurve(t), false);
  Plotly.relayout("t-curve", {"shapes[1]": vline(t, "t", "solid")});
  clearTimeout(pending);
  pending = setTimeout(() => fetch(base + "/metaclip/api/pool_counts/" + version + "/at?t=" + t, {credentials: "same-origin"})
    .then(r => r.ok ? r.json() : null).then(v => { if (v && v.t === Number(input.value)) show(v, true); }), 120);
}
slider.addEventListener("input", () => setT(fromSlider(Number(slider.value)), "slider"));
input.addEventListener("input", () => { const t = Math.round(Number(input.value)); if (t >= 1) setT(t, "input"); });
setT(C.pool_t);
"""


def _page(name: str, request: Request, **values: Any) -> HTMLResponse:
    return HTMLResponse(TEMPLATES.get_template(name).render(base=_base(request), **values))


@router.get("/", response_class=HTMLResponse)
def index_page(request: Request) -> HTMLResponse:
    return _page("index.html", request, pools=view.pools(_store(), _base(request)), root=artifact_root())


@router.get("/pool_counts/{version}", response_class=HTMLResponse)
def pool_page(version: str, request: Request) -> HTMLResponse:
    payload = {**view.pool_payload(artifact_root(), version, _base(request)), "base": _base(request)}
    return _page(
        "pool.html",
        request,
        a=payload["artifact"],
        top=payload["top"],
        ablation=payload["ablation"],
        lineage=payload["lineage"],
        payload=payload,
        script=POOL_SCRIPT,
    )


@router.get("/artifacts/{stage}/{version}", response_class=HTMLResponse)
def artifact_page(stage: str, version: str, request: Request) -> HTMLResponse:
    store = _store()
    artifact = view.require(store, stage, version)
    summary = view.summary(artifact, _base(request))
    return _page(
        "artifact.html",
        request,
        a=summary,
        lineage=view.lineage(store, artifact, _base(request)),
        params=json.dumps(summary["params"], indent=2, sort_keys=True, default=str),
        stats=json.dumps(summary["stats"], indent=2, sort_keys=True, default=str),
    )


def published(
    dag_id: str, run_id: str, task_id: str | None = None, map_index: int | None = None
) -> list[tuple[str, int, tuple[str, str]]]:
    """(task, map index, (stage, version)) of each task (instance) of a run whose return value names an artifact."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.execute(
            XComModel.get_many(
                run_id=run_id, dag_ids=dag_id, task_ids=task_id, map_indexes=map_index, key="return_value"
            ).with_only_columns(XComModel.task_id, XComModel.map_index, XComModel.value)
        ).all()
    return [(task, index, ref) for task, index, value in rows if (ref := view.artifact_ref(value))]


@runs.get("/runs/{dag_id}/{run_id}", response_class=HTMLResponse)
def run_page(dag_id: str, run_id: str, request: Request) -> HTMLResponse:
    base = _base(request)
    rows = [
        {
            "task": task if index < 0 else f"{task}[{index}]",
            "stage": stage,
            "version": version,
            "url": view.view_url(stage, version, base),
            "pool_url": view.pool_url(version, base) if stage == view.POOL_COUNTS else None,
        }
        for task, index, (stage, version) in published(dag_id, run_id)
    ]
    return _page("run.html", request, dag_id=dag_id, run_id=run_id, published=rows)


# -- the app and the plugin ----------------------------------------------------------------------


@cache
def access_checks() -> tuple[Callable[..., None], ...]:
    """Airflow's checks every route depends on: the website, and reading the runs of each curation DAG."""
    from airflow.api_fastapi.auth.managers.models.resource_details import AccessView, DagAccessEntity
    from airflow.api_fastapi.core_api.security import requires_access_dag, requires_access_view

    return (
        requires_access_view(AccessView.WEBSITE),
        *(requires_access_dag("GET", DagAccessEntity.RUN, param_dag_id=dag_id) for dag_id in CURATION_DAGS),
    )


@cache
def run_checks() -> tuple[Callable[..., None], ...]:
    """A run's tab also reads that DAG's XComs (the DAG named in the path)."""
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
    from airflow.api_fastapi.core_api.security import requires_access_dag

    return (requires_access_dag("GET", DagAccessEntity.XCOM),)


def not_found(request: Request, error: Exception) -> JSONResponse:
    """A missing or malformed artifact (a CurationError) as a 404 with its one-line message."""
    return JSONResponse({"detail": str(error)}, status_code=404)


@cache
def view_app() -> FastAPI:
    """The view's app: no OpenAPI or docs routes (they would bypass the checks), every route checked."""
    app = FastAPI(title="MetaCLIP curation view", openapi_url=None, docs_url=None, redoc_url=None)
    app.include_router(router, dependencies=[Depends(check) for check in access_checks()])
    app.include_router(runs, dependencies=[Depends(check) for check in (*access_checks(), *run_checks())])
    app.add_exception_handler(CurationError, not_found)
    return app


class ArtifactLink(BaseOperatorLink):
    """On every task: the page of the artifact its return value names (empty, so disabled, otherwise)."""

    name = "Artifact (curation view)"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        found = published(ti_key.dag_id, ti_key.run_id, ti_key.task_id, ti_key.map_index)
        return view.view_url(*found[0][2], BASE) if found else ""


class MetaclipCurationView(AirflowPlugin):
    name = "metaclip_curation_view"
    external_views: ClassVar[list[dict[str, str]]] = [
        {
            "name": "MetaCLIP curation",
            "href": f"{BASE}{view.PREFIX}/",
            "destination": "nav",
            "category": "browse",
            "url_route": "metaclip-curation",
        },
        {
            "name": "Curation artifacts",
            "href": f"{BASE}{view.PREFIX}/runs/{{DAG_ID}}/{{RUN_ID}}",
            "destination": "dag_run",
            "url_route": "metaclip-run",
        },
    ]
    global_operator_extra_links: ClassVar[list[BaseOperatorLink]] = [ArtifactLink()]

    @property
    def fastapi_apps(self) -> list[dict[str, Any]]:  # built on first use: only the API server asks
        return [{"app": view_app(), "url_prefix": view.PREFIX, "name": "MetaCLIP curation view"}]
