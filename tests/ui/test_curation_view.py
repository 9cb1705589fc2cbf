"""The curation view: its payloads against brute force, server-side sampling, Airflow's access
checks on every route of the plugin as the API server mounts it, and untrusted entries escaped.

Airflow reads its configuration when first imported, so the environment is set here, before
anything imports it (``setdefault``: in a whole-suite run tests/dags/conftest.py may have set it).
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

REPO = Path(__file__).resolve().parents[2]
for name, value in {
    "AIRFLOW_HOME": tempfile.mkdtemp(prefix="metaclip-view-airflow-"),
    "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
    "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
}.items():
    os.environ.setdefault(name, value)
os.environ["AIRFLOW__CORE__AUTH_MANAGER"] = (
    "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
)
sys.path.insert(0, str(REPO / "plugins"))

from benchmarks.curation_view import publish_curated, publish_metadata, publish_pool_counts, zipf_counts
from metaclip_tasks.core.artifacts import Artifact, ArtifactStore, version_for
from metaclip_tasks.core.errors import CurationError
from metaclip_tasks.ui import curation_view as view

XSS = ["<script>alert(1)</script>", "<img src=x onerror=alert(1)>", 'Tom & Jerry\'s "</script>"']


def in_memory(counts: np.ndarray, t: int) -> view.PoolCounts:
    """A pool of these counts with the pool's t, no store behind it."""
    artifact = Artifact("pool_counts", "0" * 16, "memory://", {"params": {"pool": "p"}, "files": [], "stats": {"t": t}})
    return view.sorted_pool(artifact, counts, pa.chunked_array([[f"e{i}" for i in range(len(counts))]]))


def brute(counts: np.ndarray, t: int) -> tuple[float, int, int]:
    """(tail ratio, expected matches sum(min(count, t)), head entries) by the definitions."""
    c = counts.astype(np.int64)
    return c[c < t].sum() / c.sum(), int(np.minimum(c, t).sum()), int((c >= t).sum())


# -- sampling and payloads ----------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 3_000_000), points=st.integers(10, 3000), data=st.data())
def test_sampling_keeps_the_ends_and_the_exact_points_in_order(n: int, points: int, data) -> None:
    exact = data.draw(st.lists(st.integers(0, n - 1), max_size=4))
    chosen = view.sample_positions(n, exact, points)
    assert chosen[0] == 0 and chosen[-1] == n - 1
    assert set(exact) <= set(chosen.tolist())
    assert np.all(np.diff(chosen) > 0)
    assert len(chosen) == n if n <= points else len(chosen) <= points


@settings(max_examples=40, deadline=None)
@given(
    size=st.integers(2_001, 60_000),
    exponent=st.floats(0.5, 2.0),
    zeros=st.floats(0, 0.5),
    seed=st.integers(0, 2**32 - 1),
    target=st.floats(0.01, 0.9),
)
def test_curves_are_monotone_sampled_and_exact_at_the_ends_and_t(size, exponent, zeros, seed, target) -> None:
    from metaclip_tasks.curation.balancing import t_for_tail_ratio

    rng = np.random.default_rng(seed)
    counts = np.floor(1e6 / np.arange(1, size + 1) ** exponent).astype(np.uint64)
    counts[rng.random(size) < zeros] = 0
    counts[0] = max(counts[0], 1)
    counts = rng.permutation(counts)
    t = t_for_tail_ratio(counts, target)
    pool = in_memory(counts, t)
    ratio, expected, head = brute(counts, t)
    ascending = np.sort(counts.astype(np.int64))

    cum = view.cumulative(pool)
    assert len(cum["position"]) <= view.MAX_POINTS
    assert cum["position"][0] == 1 and cum["position"][-1] == size
    assert cum["raw"][-1] == counts.sum() and cum["balanced"][-1] == expected == cum["expected_matches"]
    assert np.all(np.diff(cum["raw"]) >= 0) and np.all(np.diff(cum["balanced"]) >= 0)
    tail = size - head
    for p in (tail, tail + 1):  # the last tail entry and the first head entry, exactly
        if 1 <= p <= size:
            i = cum["position"].index(p)
            assert cum["raw"][i] == ascending[:p].sum() and cum["balanced"][i] == np.minimum(ascending[:p], t).sum()

    dist = view.distribution(pool)
    matched = int(np.count_nonzero(counts))
    assert dist["rank"][0] == 1 and dist["rank"][-1] == matched and len(dist["rank"]) <= view.MAX_POINTS
    assert dist["count"][0] == ascending[-1] and dist["count"][-1] == ascending[ascending > 0][0]
    assert np.all(np.diff(dist["count"]) <= 0) and dist["head_entries"] == head

    curve = view.t_curve(pool)
    assert len(curve["t"]) <= view.MAX_POINTS and curve["t"][0] == 1 and curve["t"][-1] == ascending[-1] + 1
    assert (
        np.all(np.diff(curve["t"]) > 0)
        and np.all(np.diff(curve["tail_ratio"]) >= 0)
        and np.all(np.diff(curve["expected_matches"]) >= 0)
    )
    i = curve["t"].index(t)
    assert curve["tail_ratio"][i] == pytest.approx(ratio, abs=0) and curve["expected_matches"][i] == expected
    assert (
        curve["tail_ratio"][0] == 0 and curve["tail_ratio"][-1] == 1 and curve["expected_matches"][-1] == counts.sum()
    )


@settings(max_examples=100, deadline=None)
@given(counts=st.lists(st.integers(0, 10**6), min_size=1, max_size=300).filter(any), t=st.integers(1, 2 * 10**6))
def test_any_t_is_answered_exactly(counts: list[int], t: int) -> None:
    pool = in_memory(np.array(counts, dtype=np.uint64), 1)
    at = view.at_t(pool, t)
    ratio, expected, head = brute(np.array(counts), t)
    assert (at["tail_ratio"], at["expected_matches"], at["head_entries"]) == (
        pytest.approx(ratio, abs=1e-15),
        expected,
        head,
    )
    curve = view.t_curve(pool)  # under MAX_POINTS breakpoints the curve is the step function itself
    k = np.searchsorted(curve["t"], t, side="right") - 1
    assert curve["tail_mass"][k] + t * curve["head_entries"][k] == expected


def test_top_entries_as_table_3() -> None:
    pool = in_memory(np.array([5, 40, 0, 40, 7], dtype=np.uint64), 10)
    rows = view.top_entries(pool, k=3)["rows"]
    assert [(r["entry"], r["count"], r["balanced"], r["keep_probability"]) for r in rows] == [
        ("e1", 40, 10, 0.25),
        ("e3", 40, 10, 0.25),
        ("e4", 7, 7, 1.0),
    ]


def test_names_from_urls_and_xcom_values_are_checked() -> None:
    assert view.view_url("curated", "0123456789abcdef", "/base/") == "/base/metaclip/artifacts/curated/0123456789abcdef"
    assert view.artifact_ref({"stage": "curated", "version": "0123456789abcdef", "uri": "x"}) == (
        "curated",
        "0123456789abcdef",
    )
    assert view.artifact_ref(json.dumps({"stage": "pool_counts", "version": "0123456789abcdef"})) == (
        "pool_counts",
        "0123456789abcdef",
    )
    for value in (
        None,
        3,
        "text",
        {"stage": "../etc", "version": "0123456789abcdef"},
        {"stage": "curated", "version": "../../x"},
    ):
        assert view.artifact_ref(value) is None
    with pytest.raises(CurationError):
        view.check_ref("..", "0123456789abcdef")


# -- a store: a pool with hostile entries, a curated subset and a t ablation ------------------------


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> tuple[ArtifactStore, Artifact]:
    root = tmp_path_factory.mktemp("view-root")
    store = ArtifactStore(root)
    entries = [*XSS, *(f"entry {i}" for i in range(3000))]
    counts = zipf_counts(len(entries), seed=1)
    counts[:3] = counts.max() + np.array([3, 2, 1], dtype=np.uint64)  # the hostile entries head the table
    metadata = publish_metadata(store, entries)
    pool = publish_pool_counts(store, "hostile", counts, metadata)
    curated = [publish_curated(store, pool, t, int(np.minimum(counts, t).sum() * 0.9)) for t in (pool.stats["t"], 1000)]
    rows = [
        {
            "t": c.stats["t"],
            "seed": 0,
            "tail_ratio": c.stats["tail_ratio"],
            "curated": c.stats["kept"],
            "expected": c.stats["kept"],
            "downloaded": None,
            "zero_shot_top1": None,
            "text_to_image_R@5": None,
            "version": c.version,
        }
        for c in curated
    ]
    store.publish(
        "t_ablation",
        version_for({"ablation": pool.version}),
        {
            "params": {},
            "inputs": [{"role": "pool_counts", **pool.ref}, *({"role": "curated", **c.ref} for c in curated)],
        },
        lambda out: {"pool": "hostile", "rows": rows, "nested": True},
    )
    return store, pool


def test_lineage_runs_from_the_inputs_to_the_results(store) -> None:
    store, pool = store
    stages = [(n["stage"], n["relation"]) for n in view.lineage(store, pool)]
    assert stages[:2] == [("metadata", "input"), ("pool_counts", "self")]
    assert sorted(stages[2:]) == [("curated", "output"), ("curated", "output"), ("t_ablation", "output")]
    payload = view.pool_payload(str(store.root), pool.version)
    assert [r["t"] for r in payload["ablation"]["rows"]] == [pool.stats["t"], 1000]
    assert {c["t"] for c in payload["t_curve"]["curated"]} == {pool.stats["t"], 1000}
    assert [r["entry"] for r in payload["top"]["rows"][:3]] == XSS


# -- the plugin in Airflow's API app ------------------------------------------------------------


@pytest.fixture(scope="module")
def api(store):
    """Airflow's API app (as ``airflow api-server`` builds it, the plugins folder loaded) on a migrated
    DB, the view's artifact root the test store; yields (client, tokens by name)."""
    from fastapi.testclient import TestClient

    from metaclip_tasks.dev.local_airflow import migrate

    migrate(dict(os.environ))
    from airflow.api_fastapi.app import create_app, get_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    os.environ["METACLIP_ROOT"] = str(store[0].root)
    app = create_app("core")
    with TestClient(app) as client:
        manager = get_auth_manager()
        tokens = {
            role: manager.generate_jwt(SimpleAuthManagerUser(username=role, role=role)) for role in ("viewer", "admin")
        }
        tokens["nobody"] = manager.generate_jwt(SimpleAuthManagerUser(username="nobody", role=None))
        yield client, tokens
    os.environ.pop("METACLIP_ROOT")


def routes(version: str) -> list[str]:
    """Every route of the view's app, with its path parameters filled in."""
    import metaclip_curation_view as plugin

    values = {
        "version": version,
        "stage": "pool_counts",
        "dag_id": "metaclip_curation_demo",
        "run_id": "manual__2024-01-01",
    }
    paths = [re.sub(r"{(\w+)}", lambda m: values[m.group(1)], r.path) for r in plugin.view_app().routes]
    return [f"/metaclip{p}" + ("?t=5" if p.endswith("/at") else "") for p in paths]


@pytest.mark.airflow
def test_every_route_needs_an_airflow_token(api, store) -> None:
    client, tokens = api
    paths = routes(store[1].version)
    assert len(paths) >= 14
    for path in paths:
        assert client.get(path).status_code == 401, path
        assert client.get(path, headers={"Authorization": "Bearer not-a-jwt"}).status_code == 403, path
        assert client.get(path, headers={"Authorization": f"Bearer {tokens['nobody']}"}).status_code == 403, path
        assert client.get(path, headers={"Authorization": f"Bearer {tokens['viewer']}"}).status_code == 200, path
    client.cookies.set("_token", tokens["admin"])  # how the UI (and the iframe of an external view) sends it
    try:
        assert all(client.get(path).status_code == 200 for path in paths)
    finally:
        client.cookies.clear()


@pytest.mark.airflow
def test_pages_show_hostile_entries_as_text(api, store) -> None:
    client, tokens = api
    headers = {"Authorization": f"Bearer {tokens['viewer']}"}
    version = store[1].version
    html = client.get(f"/metaclip/pool_counts/{version}", headers=headers).text
    assert "<script>alert" not in html and "<img src=x" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    embedded = re.search(r'<script type="application/json" id="payload">(.*?)</script>', html, re.DOTALL).group(1)
    assert "<" not in embedded and json.loads(embedded)["top"]["rows"][0]["entry"] == XSS[0]
    assert html.count("</script>") == html.count("<script")  # no element closed early by an entry
    assert 'src="/metaclip/static/plotly.min.js"' in html and "cdn" not in html.lower()
    for path in (
        "/metaclip/",
        f"/metaclip/artifacts/pool_counts/{version}",
        f"/metaclip/artifacts/metadata/{store[1].inputs()[0].version}",
    ):
        page = client.get(path, headers=headers).text
        assert "<script>alert" not in page and "<img src=x" not in page, path
    data = client.get(f"/metaclip/api/pool_counts/{version}/top?k=3", headers=headers).json()
    assert [r["entry"] for r in data["rows"]] == XSS  # JSON keeps the text; only pages escape it
    assert client.get("/metaclip/static/plotly.min.js", headers=headers).content.startswith(b"/**")


@pytest.mark.airflow
def test_missing_or_malformed_artifacts_are_404(api) -> None:
    client, tokens = api
    headers = {"Authorization": f"Bearer {tokens['viewer']}"}
    for path in (
        "/metaclip/artifacts/curated/0123456789abcdef",
        "/metaclip/api/pool_counts/..%2f..%2fetc",
        "/metaclip/artifacts/x/123",
    ):
        assert client.get(path, headers=headers).status_code == 404, path


@pytest.mark.airflow
def test_the_plugin_registers_its_app_views_and_link(api) -> None:
    client, tokens = api
    plugins = client.get("/api/v2/plugins", headers={"Authorization": f"Bearer {tokens['admin']}"}).json()["plugins"]
    ours = next(p for p in plugins if p["name"] == "metaclip_curation_view")
    assert [a["url_prefix"] for a in ours["fastapi_apps"]] == ["/metaclip"]
    assert {v["destination"]: v["href"] for v in ours["external_views"]} == {
        "nav": "/metaclip/",
        "dag_run": "/metaclip/runs/{DAG_ID}/{RUN_ID}",
    }
    assert any("ArtifactLink" in link for link in ours["global_operator_extra_links"])
