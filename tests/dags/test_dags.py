"""The DAGs: integrity, params derived from the library's dataclasses, and end to end with
``dag.test()`` on a pool of three snapshots built from the shared real captions (pairs imported
by the DAG, counts, cache hits, versions per t, nested ablations, bad input), and the demo DAG
against ``metaclip demo``'s driver."""

from __future__ import annotations

import dataclasses
import os
from datetime import date
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from metaclip_tasks.core import params as P
from metaclip_tasks.core.artifacts import ArtifactStore
from metaclip_tasks.core.snapshots import PAPER_POOL2_RANGE, snapshot_date, snapshots_between
from metaclip_tasks.core.stage import run
from metaclip_tasks.curation.counting import load_counts
from metaclip_tasks.curation.matching import Matcher
from metaclip_tasks.metadata.build import MetadataBuildParams
from metaclip_tasks.stages import PAIRS_IMPORT, IngestParams, MatchParams, PairsImportParams
from metaclip_tasks.stages.plan import OnlineDownload, Subset
from metaclip_tasks.training.download import DownloadParams

pytestmark = pytest.mark.airflow
DAG_IDS = {
    "metaclip_match_snapshot",
    "metaclip_pool_counts",
    "metaclip_balance",
    "metaclip_t_ablation",
    "metaclip_curation_demo",
    "metaclip_metadata",
    "metaclip_download",
    "metaclip_train",
}
THREE = ["CC-MAIN-2023-06", "CC-MAIN-2023-14", "CC-MAIN-2023-23"]
TASKS = {
    "metaclip_match_snapshot": {"pairs", "match"},
    "metaclip_curation_demo": {"snapshots", "match", "count_and_balance", "report"},
}
DASK_TASKS = {
    "metaclip_match_snapshot": ["pairs", "match"],
    "metaclip_balance": ["balance"],
    "metaclip_t_ablation": ["balance"],
    "metaclip_curation_demo": ["match", "count_and_balance"],
    "metaclip_metadata": ["fetch_sources", "build"],
    "metaclip_download": ["download"],
    "metaclip_train": ["download", "train"],
}
PARAM_CLASSES = (
    Subset,
    DownloadParams,
    OnlineDownload,
    MetadataBuildParams,
    MatchParams,
    PairsImportParams,
    IngestParams,
)


def test_every_dag_imports_with_its_id_and_no_cycle(dagbag) -> None:
    assert dagbag.import_errors == {}
    assert set(dagbag.dag_ids) == DAG_IDS
    for dag_id in DAG_IDS:
        dag = dagbag.get_dag(dag_id)
        assert len(dag.topological_sort()) == len(dag.tasks)  # raises on a cycle
        assert dag.doc_md and dag.tags and "metaclip" in dag.tags
    for dag_id, task_ids in TASKS.items():
        assert set(dagbag.get_dag(dag_id).task_ids) == task_ids, dag_id


def test_tasks_on_dask_retry(dagbag) -> None:
    """Tasks on Dask, storage or the network retry after at least 30 s, with exponential backoff unless
    the delay is already 5 min (training), long enough to ride out a slow start."""
    for dag_id, task_ids in DASK_TASKS.items():
        for task_id in task_ids:
            task = dagbag.get_dag(dag_id).get_task(task_id)
            assert task.retries >= 1, (dag_id, task_id)
            assert task.retry_delay.total_seconds() >= 30, (dag_id, task_id, task.retry_delay)
            backoff = task.retry_exponential_backoff >= 2 or task.retry_delay.total_seconds() >= 300
            assert backoff, (dag_id, task_id, task.retry_exponential_backoff)


def test_every_task_maps_bad_input_to_an_immediate_failure(dagbag) -> None:
    """Each task body runs its library calls inside ``bad_input_fails()``: bad input fails at once with
    the message (no retry), anything else retries (download_once once lacked it)."""
    import inspect

    for dag_id in DAG_IDS:
        for task in dagbag.get_dag(dag_id).tasks:
            source = inspect.getsource(task.python_callable)
            assert "bad_input_fails()" in source, (dag_id, task.task_id)


def test_the_scheduler_sees_the_backoff(dagbag) -> None:
    """The serialized tasks (what the scheduler runs) keep the backoff multiplier."""
    from airflow.serialization.serialized_objects import OperatorSerialization

    dag = dagbag.get_dag("metaclip_match_snapshot")
    for task_id in ("pairs", "match"):
        encoded = OperatorSerialization.serialize_operator(dag.get_task(task_id))
        assert encoded["retry_exponential_backoff"] == 2.0, encoded
        assert encoded["retry_delay"] >= 30, encoded


def test_params_are_typed_and_described(dagbag) -> None:
    for dag_id in DAG_IDS:
        for name, param in dagbag.get_dag(dag_id).params.items():
            assert param.schema.get("type") and param.description, (dag_id, name)


def test_params_shared_with_the_library_take_its_defaults(dagbag) -> None:
    """A default lives in one place: a DAG param named like a field of the library's params
    dataclasses has that field's default (tuples as lists)."""
    defaults: dict[str, object] = {}
    for cls in PARAM_CLASSES:
        for f in dataclasses.fields(cls):
            value = P.default(f)
            if value is not dataclasses.MISSING:  # a required field (a snapshot, sources) comes from the run
                value = list(value) if isinstance(value, tuple) else value
                assert defaults.setdefault(f.name, value) == value, f"{f.name} has two defaults"
    compared = set()
    for dag_id in DAG_IDS:
        params = dagbag.get_dag(dag_id).params
        for name in params:
            if name in defaults:
                assert params.get_param(name).value == defaults[name], (dag_id, name, params.get_param(name).value)
                compared.add(name)
    # every class is represented, so a renamed field or param does not silently skip the check
    assert {
        "pool",
        "t",
        "target_tail_ratio",
        "seed",
        "metadata_version",
        "image_size",
        "threads",
        "backend",
        "url_column",
        "rows_per_shard",
        "sources",
        "min_pmi",
        "wikipedia_dumps",
        "download_budget",
    } <= compared


def test_timetable_runs_once_per_crawl_and_round_trips(dagbag) -> None:
    from metaclip_timetable import CommonCrawlTimetable

    timetable = dagbag.get_dag("metaclip_match_snapshot").timetable
    assert isinstance(timetable, CommonCrawlTimetable)
    window = [e.date() for e in timetable.event_dates if date(2013, 1, 1) <= e.date() <= date(2023, 4, 30)]
    assert window == [snapshot_date(s) for s in snapshots_between(*PAPER_POOL2_RANGE)]
    assert len(window) == 91
    again = CommonCrawlTimetable.deserialize(timetable.serialize())
    assert again.event_dates == timetable.event_dates


def _sources() -> Path:
    """Raw parquet files the tests import as pairs (outside the artifact root)."""
    return Path(os.environ["METACLIP_ROOT"]).parent / "sources"


THREE_SOURCE = str(_sources() / "three" / "{snapshot}")  # the match DAG's pairs_source for THREE


@pytest.fixture(scope="module")
def three_snapshots(airflow_db, captions_table: pa.Table) -> dict[str, list[str]]:
    """The real captions over three snapshots, two raw parquet files each (``THREE_SOURCE``);
    returns each snapshot's texts."""
    texts = {}
    for i, snapshot in enumerate(THREE):
        part = captions_table.slice(i * 3000, 3000)
        directory = Path(THREE_SOURCE.format(snapshot=snapshot))
        directory.mkdir(parents=True, exist_ok=True)
        pq.write_table(part.slice(0, 1500), directory / "part-00000.parquet")
        pq.write_table(part.slice(1500), directory / "part-00001.parquet")
        texts[snapshot] = part.column("text").to_pylist()
    return texts


def _store() -> ArtifactStore:
    return ArtifactStore(os.environ["METACLIP_ROOT"])


def _asset_events(kind: str) -> list[dict]:
    """The ``extra`` of every event of the asset of an artifact kind (``x-metaclip://artifacts/<kind>``) in the Airflow DB."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from metaclip_airflow import ASSETS
    from sqlalchemy import select

    with create_session() as session:
        query = select(AssetEvent.extra).join(AssetModel, AssetEvent.asset_id == AssetModel.id)
        return [dict(extra) for extra in session.scalars(query.where(AssetModel.name == ASSETS[kind].name))]


def _run_events(run_) -> dict[str, list[dict]]:
    """The asset events of one DAG run: asset name -> the ``extra`` of each."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        query = select(AssetModel.name, AssetEvent.extra).join(AssetModel, AssetEvent.asset_id == AssetModel.id)
        query = query.where(AssetEvent.source_dag_id == run_.dag_id, AssetEvent.source_run_id == run_.run_id)
        rows = session.execute(query)
        events: dict[str, list[dict]] = {}
        for name, extra in rows:
            events.setdefault(name, []).append(dict(extra))
    return events


def _map_indexes(run_, task_id: str) -> list[str | None]:
    """The rendered map index (the UI's label) of each mapped instance of a task, in map index order."""
    tis = sorted((ti for ti in run_.get_task_instances() if ti.task_id == task_id), key=lambda ti: ti.map_index)
    return [ti.rendered_map_index for ti in tis]


def _run(dagbag, dag_id: str, **conf):
    """One ``dag.test()`` run.  In one process a run's conf can outlive it in the DAG's params:
    tests that rely on a default pass it explicitly."""
    if dag_id == "metaclip_match_snapshot":
        conf.setdefault("raw_source", "")
    return dagbag.get_dag(dag_id).test(run_conf=conf)


def test_match_count_balance_ablate_end_to_end(dagbag, three_snapshots, wordnet: list[str]) -> None:
    matcher = Matcher(wordnet)
    for snapshot in THREE:  # the DAG imports the raw files as pairs, then matches them
        run_ = _run(
            dagbag, "metaclip_match_snapshot", snapshot=snapshot, pairs_source=THREE_SOURCE, metadata_version=""
        )
        assert run_.state == "success"
    matched = {a.stats["snapshot"]: a for a in _store().list("matched")}
    pairs = {a.params["snapshot"]: a for a in _store().list("pairs")}
    direct = {}
    for snapshot in THREE:
        assert pairs[snapshot].stats["pairs"] == 3000 and len(pairs[snapshot].data_files()) == 2
        assert matched[snapshot].input("pairs") == pairs[snapshot]
        direct[snapshot] = np.bincount(matcher.match_batch(three_snapshots[snapshot]).entry_ids, minlength=len(wordnet))
        assert np.array_equal(load_counts(matched[snapshot].path("counts.npy")), direct[snapshot])
        assert len(matched[snapshot].data_files()) == 2

    events = _asset_events("matched")
    assert {(e["snapshot"], e["version"], e["uri"]) for e in events} >= {
        (s, matched[s].version, matched[s].uri) for s in THREE
    }

    # re-running is a cache hit: no new artifact, the same manifest
    before = {(a.stage, a.version): a.manifest["created"] for a in _store().list()}
    assert _run(dagbag, "metaclip_match_snapshot", snapshot=THREE[0], pairs_source=THREE_SOURCE).state == "success"
    assert {(a.stage, a.version): a.manifest["created"] for a in _store().list()} == before
    # and so is matching the snapshot's newest pairs artifact, without a source
    assert _run(dagbag, "metaclip_match_snapshot", snapshot=THREE[1], pairs_source="").state == "success"
    assert {(a.stage, a.version): a.manifest["created"] for a in _store().list()} == before

    assert _run(dagbag, "metaclip_pool_counts", pool="three").state == "success"
    (counts,) = _store().list("pool_counts")
    assert np.array_equal(load_counts(counts.path("counts.npy")), sum(direct.values()))
    assert {f["name"] for f in counts.manifest["files"]} >= {"counts.npy", "entry_counts.png", "top_entries.json"}
    assert counts.stats["t"] >= 1 and set(counts.stats["tail_ratios"]) == {"1000", "5000", "20000", "60000", "170000"}
    lineage = _store().lineage("pool_counts", counts.version)
    assert sorted(i["stage"] for i in lineage["inputs"]) == ["matched", "matched", "matched", "metadata"]

    assert _run(dagbag, "metaclip_balance", pool="three", seed=1).state == "success"
    assert _run(dagbag, "metaclip_balance", pool="three", seed=1).state == "success"  # cache hit
    assert len(_store().list("curated")) == 1
    assert _run(dagbag, "metaclip_balance", pool="three", t=7, seed=1).state == "success"
    curated = _store().list("curated")
    assert len(curated) == 2 and {c.params["t"] for c in curated} == {counts.stats["t"], 7}
    assert all(c.stats["kept_within_4_sd"] for c in curated)

    run_ = _run(dagbag, "metaclip_t_ablation", pool="three", t_values=[2, 20, 200], tail_ratios=[], seed=1)
    assert run_.state == "success"
    assert _map_indexes(run_, "balance") == ["t=2", "t=20", "t=200"]  # mapped per t: labelled by it in the UI
    (ablation,) = _store().list("t_ablation")
    assert ablation.stats["nested"] is True
    assert [r["t"] for r in ablation.stats["rows"]] == [2, 20, 200]
    sizes = [r["curated"] for r in ablation.stats["rows"]]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]


@pytest.mark.parametrize(
    ("dag_id", "conf", "message"),
    [
        ("metaclip_balance", {"pool": "three", "t": 0}, "t: 0 is less than the minimum of 1"),
        (
            "metaclip_balance",
            {"pool": "three", "target_tail_ratio": 1.5},
            "target_tail_ratio: 1.5 is greater than or equal to the maximum of 1",
        ),
        ("metaclip_balance", {"pool": "nope"}, "pool: 'nope' is not one of"),
        ("metaclip_match_snapshot", {"snapshot": "CC-MAIN-2031-01"}, "snapshot: 'CC-MAIN-2031-01' is not one of"),
        ("metaclip_t_ablation", {"pool": "three", "t_values": [0]}, "t_values: 0 is less than the minimum of 1"),
    ],
)
def test_bad_params_are_refused_before_any_work(dagbag, airflow_db, dag_id: str, conf: dict, message: str) -> None:
    from airflow.sdk.exceptions import ParamValidationError

    with pytest.raises(ParamValidationError, match=message.replace("(", r"\(")):
        _run(dagbag, dag_id, **conf)


@pytest.mark.parametrize(
    ("dag_id", "conf", "message"),
    [
        (
            "metaclip_balance",
            {"pool": "three", "t": 5, "target_tail_ratio": 0.2},
            "give t (5) or target_tail_ratio (0.2), not both",
        ),
        (
            "metaclip_t_ablation",
            {"pool": "three", "t_values": [5], "tail_ratios": [0.2]},
            "give t_values or tail_ratios",
        ),
        (
            "metaclip_match_snapshot",
            {"snapshot": "CC-MAIN-2013-20", "pairs_source": ""},
            "no pairs of CC-MAIN-2013-20 under",
        ),
        (
            "metaclip_match_snapshot",
            {"snapshot": "CC-MAIN-2013-20", "pairs_source": "/nonexistent/{snapshot}/*.parquet"},
            "input /nonexistent/CC-MAIN-2013-20/*.parquet does not exist",
        ),
    ],
)
def test_inconsistent_params_fail_the_first_task_with_the_reason(
    dagbag, airflow_db, capfd, dag_id: str, conf: dict, message: str
) -> None:
    run = _run(dagbag, dag_id, **conf)
    assert run.state == "failed"
    assert message in capfd.readouterr().out
    failed = [ti.task_id for ti in run.get_task_instances() if ti.state == "failed"]
    assert failed == [dagbag.get_dag(dag_id).topological_sort()[0].task_id]


def test_corrupt_shard_fails_naming_it_and_leaves_nothing(dagbag, airflow_db, capfd, captions_table) -> None:
    root = Path(os.environ["METACLIP_ROOT"])
    directory = _sources() / "corrupt" / "CC-MAIN-2023-40"
    directory.mkdir(parents=True, exist_ok=True)
    pq.write_table(captions_table.slice(0, 100), directory / "part-00000.parquet")
    (directory / "part-00001.parquet").write_bytes(b"PAR1 this is not parquet PAR1")
    before = {(a.stage, a.version) for a in _store().list()}
    run_ = _run(
        dagbag, "metaclip_match_snapshot", snapshot="CC-MAIN-2023-40", pairs_source=str(directory.parent / "{snapshot}")
    )
    assert run_.state == "failed"
    assert f"input shard {directory / 'part-00001.parquet'} is not a readable parquet file" in capfd.readouterr().out
    failed = [ti.task_id for ti in run_.get_task_instances() if ti.state == "failed"]
    assert failed == ["pairs"]  # the import, before any matching
    assert {(a.stage, a.version) for a in _store().list()} == before
    assert not [a for a in _store().list("pairs") if a.params["snapshot"] == "CC-MAIN-2023-40"]
    assert not [a for a in _store().list("matched") if a.stats["snapshot"] == "CC-MAIN-2023-40"]
    hidden = [p for stage in (root / "artifacts").iterdir() for p in stage.iterdir() if p.name.startswith(".")]
    assert hidden == []


def test_the_match_dag_ingests_a_crawl_from_common_crawl_first(dagbag, airflow_db, commoncrawl_mirror, wordnet) -> None:
    from tests.conftest import CRAWL

    base, mirror, paths, _ = commoncrawl_mirror
    run_ = _run(
        dagbag,
        "metaclip_match_snapshot",
        snapshot=CRAWL,
        raw_source="commoncrawl",
        format="warc",
        cc_base=base,
        languages=["en"],
        max_files=None,
        pairs_source="",
        metadata_version="",
    )
    assert run_.state == "success"
    matched = [a for a in _store().list("matched") if a.stats["snapshot"] == CRAWL][-1]
    pairs = matched.input("pairs")
    assert pairs.manifest["code"]["stage"] == "ingest" and pairs.stats["files"] == len(paths)
    assert pairs.manifest["external"] == [{"commoncrawl": p} for p in paths]
    assert matched.stats["pairs_in"] == pairs.stats["pairs"] > 0
    # the same files given as a path template are the same pairs (a crawl's files identify the artifact by content)
    local = str(mirror / "crawl-data" / "{snapshot}" / "segments")
    run_ = _run(
        dagbag,
        "metaclip_match_snapshot",
        snapshot=CRAWL,
        raw_source=local,
        format="warc",
        cc_base=base,
        languages=["en"],
        max_files=None,
        pairs_source="",
        metadata_version="",
    )
    assert run_.state == "success"
    again = [a for a in _store().list("matched") if a.stats["snapshot"] == CRAWL][-1]
    assert again.input("pairs").dataset().to_table().equals(pairs.dataset().to_table())


def test_metadata_dag_builds_an_artifact_the_match_dag_takes(dagbag, three_snapshots, tmp_path: Path) -> None:
    import gzip

    from metaclip_tasks.dev.shared_data import WIKIPEDIA_SAMPLE

    if not WIKIPEDIA_SAMPLE.is_file():
        pytest.skip("shared Wikipedia sample absent")
    views = tmp_path / "pageviews-20220101-000000.gz"
    with gzip.open(views, "wt") as f:
        f.write("en Albedo 90 0\nen Ant 80 0\nen Special:Search 900 0\n")
    conf = {
        "wikipedia_dumps": [str(WIKIPEDIA_SAMPLE)],
        "pageview_files": [str(views)],
        "min_unigram_count": 20,
        "min_pmi": 12.0,
        "min_bigram_count": 2,
    }
    assert _run(dagbag, "metaclip_metadata", **conf).state == "success"
    built = [
        a for a in _store().list("metadata") if a.params.get("sources") == ["wordnet", "unigram", "bigram", "title"]
    ]
    assert len(built) == 1
    assert built[0].stats["by_source"] == {"wordnet": 86_654, "unigram": 1_683, "bigram": 3_492, "title": 2}
    assert {f["name"] for f in built[0].manifest["files"]} == {"entries.json", "entries.sources.json"}
    assert _asset_events("metadata")[-1]["version"] == built[0].version

    run_ = _run(
        dagbag,
        "metaclip_match_snapshot",
        snapshot=THREE[0],
        metadata_version=built[0].version,
        pairs_source=THREE_SOURCE,
    )
    assert run_.state == "success"
    made = [a for a in _store().list("matched") if {"role": "metadata", **built[0].ref} in a.manifest["inputs"]]
    assert len(made) == 1 and made[0].stats["entries"] == built[0].stats["entries"]
    assert made[0].input("metadata") == built[0] and made[0].stats["snapshot"] == THREE[0]


def test_metadata_dag_refuses_sources_without_files(dagbag, airflow_db, capfd) -> None:
    run = _run(dagbag, "metaclip_metadata", sources=["wordnet", "unigram"], wikipedia_dumps=[], pageview_files=[])
    assert run.state == "failed"
    assert "the unigram and bigram sources need wikipedia_dumps" in capfd.readouterr().out


def _coco_matched(dagbag, coco_pairs: tuple[list[str], list[str]]) -> None:
    """The COCO pairs imported as the pairs artifact of the ``coco`` pool's snapshot (as a
    backfill must: no conf), then matched by the DAG from that newest pairs artifact."""
    urls, texts = coco_pairs
    source = _sources() / "coco" / "part-00000.parquet"
    if not source.is_file():
        source.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table({"url": urls, "text": texts}), source)
    run(_store(), PAIRS_IMPORT, PairsImportParams("CC-MAIN-2023-50", (str(source),)))  # a cache hit once imported
    run_ = _run(dagbag, "metaclip_match_snapshot", snapshot="CC-MAIN-2023-50", metadata_version="", pairs_source="")
    assert run_.state == "success"


def test_download_dag_and_an_ablation_that_downloads_once(dagbag, airflow_db, coco_pairs, wordnet) -> None:
    texts = coco_pairs[1]
    _coco_matched(dagbag, coco_pairs)
    found = Matcher(wordnet).match_batch(texts)
    matched = int(np.sum(found.offsets[1:] > found.offsets[:-1]))

    run_ = _run(dagbag, "metaclip_download", pool="coco", t=100_000, seed=0, image_size=64, threads=4, timeout=5)
    assert run_.state == "success"
    (downloaded,) = _store().list("downloaded")
    assert downloaded.stats["count"] == downloaded.stats["successes"] == matched  # every curated image is served
    assert {f["name"] for f in downloaded.manifest["files"]} >= {"index.parquet", "shards/00000.tar"}
    assert _asset_events("downloaded")[-1]["version"] == downloaded.version

    run_ = _run(
        dagbag,
        "metaclip_t_ablation",
        pool="coco",
        t_values=[1, 100_000],
        tail_ratios=[],
        seed=0,
        download=True,
        online_balancing=False,
    )
    assert run_.state == "success"
    table = [a for a in _store().list("t_ablation") if a.stats["pool"] == "coco"][-1]
    rows = {r["t"]: r for r in table.stats["rows"]}
    assert rows[100_000]["downloaded"] == matched and 0 < rows[1]["downloaded"] < matched
    assert table.stats["nested"] is True
    # one download for the largest t (its own default image options), the smaller t a view of it
    assert len(_store().list("downloaded")) == 2 and len(_store().list("download_view")) == 1


def test_train_dag_refuses_the_gpu_recipe_without_a_gpu(dagbag, airflow_db, capfd) -> None:
    from metaclip_tasks.training.train import visible_gpus

    if visible_gpus():
        pytest.skip("a GPU is visible here")
    run_ = _run(dagbag, "metaclip_train", pool="coco", t=100, recipe="vit-b-32", device="cuda")
    assert run_.state == "failed"
    assert "needs a GPU and none is visible" in capfd.readouterr().out


def test_ablation_downloads_once_trains_and_evaluates_per_t(dagbag, airflow_db, coco_pairs) -> None:
    _coco_matched(dagbag, coco_pairs)
    run_ = _run(
        dagbag,
        "metaclip_train",
        pool="coco",
        t=100_000,
        seed=0,
        recipe="tiny-cpu",
        device="cpu",
        epochs=None,
        global_batch_size=None,
        lr=None,
        image_size=64,
    )
    assert run_.state == "success"
    (metrics,) = _store().list("metrics")
    assert metrics.stats["images"] == 79 and set(metrics.stats["zero_shot"]) == {"top1", "top5"}
    from metaclip_tasks.cli.main import results_table

    assert results_table(_store()).splitlines()[2].startswith(f"| {metrics.version} | metaclip-tiny | ")
    checkpoint = metrics.input("checkpoint")
    assert checkpoint.params["model"] == "metaclip-tiny"
    assert {f["name"] for f in checkpoint.manifest["files"]} >= {"checkpoint.pt", "logs/train/out.log"}

    run_ = _run(
        dagbag,
        "metaclip_t_ablation",
        pool="coco",
        t_values=[2, 100_000],
        tail_ratios=[],
        seed=0,
        download=True,
        train=True,
        recipe="tiny-cpu",
        device="cpu",
        online_balancing=False,
    )
    assert run_.state == "success"
    table = [a for a in _store().list("t_ablation") if a.inputs(role="metrics")][-1]
    assert len(table.inputs(role="metrics")) == 2
    assert [r["t"] for r in table.stats["rows"]] == [2, 100_000]
    assert all(r["zero_shot_top1"] is not None and r["downloaded"] for r in table.stats["rows"])
    assert {f["name"] for f in table.manifest["files"]} == {"comparison.json", "comparison.md", "comparison.png"}


def test_an_online_ablation_trains_every_t_on_the_one_download_balanced_for_it(dagbag, airflow_db, coco_pairs) -> None:
    """``online_balancing``: each t trains on the whole download of the largest t (not on its view), its
    loader balanced for t: each checkpoint records ``balance_t`` = t and the loader's figures, epoch 0
    keeping exactly the offline subset's downloaded pairs; the table has each t's metrics."""
    _coco_matched(dagbag, coco_pairs)
    run_ = _run(
        dagbag,
        "metaclip_t_ablation",
        pool="coco",
        t_values=[2, 100_000],
        tail_ratios=[],
        seed=0,
        download=True,
        train=True,
        recipe="tiny-cpu",
        device="cpu",
        online_balancing=True,
    )
    assert run_.state == "success"
    events = _run_events(run_)
    by_t = {e["t"]: _store().require("checkpoint", e["version"]) for e in events["x-metaclip://artifacts/checkpoint"]}
    assert sorted(by_t) == [2, 100_000] and all(c.params["balance_t"] == t for t, c in by_t.items())
    checkpoints = list(by_t.values())
    (downloaded,) = {c.input("downloaded").version: c.input("downloaded") for c in checkpoints}.values()
    assert downloaded.input("curated").params["t"] == 100_000
    assert not any(c.inputs("download_view") for c in checkpoints)  # the whole download, not the t's view
    (view,) = [v for v in _store().list("download_view") if v.input("downloaded") == downloaded and v.stats["t"] == 2]
    pairs = downloaded.stats["successes"]
    for t, checkpoint in by_t.items():
        online = checkpoint.stats["online_balancing"]
        assert (online["t"], online["seed"], online["download_t"], online["downloaded_pairs"]) == (t, 0, 100_000, pairs)
        assert online["epoch0_kept"] == (view.stats["samples"] if t == 2 else pairs)  # epoch 0: the offline subset
        assert online["epochs"] == [{"epoch": 0, "seen": pairs, "kept": online["epoch0_kept"], "shards": 1}]
        assert checkpoint.stats["samples"] >= online["epoch0_kept"] and checkpoint.files(under="logs/balance")
    # Not "< pairs": t=2 keeps a head pair with probability 2/count, and on these 78 COCO pairs every one
    # is kept in ~17% of draws (the draws hash the uids, and the URLs carry the image server's free port).
    assert 0 < by_t[2].stats["online_balancing"]["epoch0_kept"] <= pairs
    (table,) = [_store().require("t_ablation", e["version"]) for e in events["x-metaclip://artifacts/t_ablation"]]
    assert {m.input("checkpoint").version for m in table.inputs(role="metrics")} == {c.version for c in checkpoints}
    assert [r["t"] for r in table.stats["rows"]] == [2, 100_000]
    assert all(r["zero_shot_top1"] is not None for r in table.stats["rows"])  # each t's metrics, by its balance_t


def test_demo_dag_curates_what_the_demo_command_curates(
    dagbag, airflow_db, captions_table, wordnet, capfd, tmp_path: Path, monkeypatch
) -> None:
    """One stage implementation, two drivers: the demo DAG's curated artifact is the one
    ``run_demo`` (``metaclip demo``, no Dask) makes on a fresh root: same version, same files."""
    from metaclip_tasks.core.snapshots import get_pool
    from metaclip_tasks.dev.demo import POOL, run_demo

    monkeypatch.setenv("METACLIP_ROOT", str(tmp_path / "dag"))  # dag.test() runs the tasks in this process
    run_ = _run(dagbag, "metaclip_curation_demo", seed=0)
    assert run_.state == "success"
    assert "MetaCLIP curation demo on real captions" in capfd.readouterr().out  # the report task's log
    assert _map_indexes(run_, "match") == list(get_pool(POOL).snapshots)  # mapped per snapshot: labelled by its id
    by_dag = ArtifactStore(tmp_path / "dag")
    (curated,) = by_dag.list("curated")
    assert curated.stats["pool"] == POOL and curated.stats["kept"] > 0

    direct = ArtifactStore(tmp_path / "direct")
    report = run_demo(direct, client=None)
    (expected,) = direct.list("curated")
    assert curated.version == expected.version and curated.uri != expected.uri
    assert {f["name"]: f["sha256"] for f in curated.manifest["files"]} == {
        f["name"]: f["sha256"] for f in expected.manifest["files"]
    }
    assert curated.stats == expected.stats and expected.uri in report
    assert {(a.stage, a.version) for a in by_dag.list()} == {(a.stage, a.version) for a in direct.list()}

    # the run's asset events (the Assets page): one per artifact it published, each with its version and URI
    events = _run_events(run_)
    published = {(e["stage"], e["version"], e["uri"]) for extras in events.values() for e in extras}
    made = {
        (a.stage, a.version, a.uri) for a in by_dag.list() if a.stage != "matcher"
    }  # the matcher: match's own cache
    assert published == made
    assert all(name == f"x-metaclip://artifacts/{e['stage']}" for name, extras in events.items() for e in extras)
    assert len(events["x-metaclip://artifacts/matched"]) == len(events["x-metaclip://artifacts/pairs"]) == 3
    (counted,) = events["x-metaclip://artifacts/pool_counts"]
    assert (counted["t"], counted["target_tail_ratio"], counted["warnings"]) == (curated.params["t"], 0.3, [])
    (balanced,) = events["x-metaclip://artifacts/curated"]
    keys = ("t", "tail_ratio", "kept")
    assert {k: balanced[k] for k in keys} == {k: curated.stats[k] for k in keys}
