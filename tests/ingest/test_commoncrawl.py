"""A crawl id as the ingest stage's source: Common Crawl's file list and files read over HTTP from a
mirror on 127.0.0.1 (never the network), retried on transient errors, resumed after a failure."""

from __future__ import annotations

import io

import pandas as pd
import pytest

from metaclip_tasks.core.artifacts import ArtifactStore
from metaclip_tasks.core.errors import CurationError
from metaclip_tasks.core.stage import run
from metaclip_tasks.dev.shared_data import WARC
from metaclip_tasks.ingest.commoncrawl import crawl_files, listing_uri, open_stream
from metaclip_tasks.stages import INGEST, IngestParams
from tests.conftest import CRAWL


def _ingest(base: str, **kw) -> IngestParams:
    return IngestParams(CRAWL, (CRAWL,), **{"format": "warc", "languages": ("any",), "cc_base": base, **kw})


def test_crawl_id_reads_the_file_list_and_the_files_over_http(tmp_path, commoncrawl_mirror):
    base, _, paths, _ = commoncrawl_mirror
    assert listing_uri(CRAWL, "warc", base) == f"{base}crawl-data/{CRAWL}/warc.paths.gz"
    assert crawl_files(CRAWL, "warc", base) == [base + p for p in paths]
    assert crawl_files(CRAWL, "warc", base, max_files=1) == [base + paths[0]]

    from_http = run(ArtifactStore(tmp_path / "a"), INGEST, _ingest(base))
    local = run(
        ArtifactStore(tmp_path / "b"),
        INGEST,
        IngestParams(CRAWL, tuple(str(WARC / p.rsplit("/", 1)[1]) for p in paths), languages=("any",)),
    )
    assert from_http.stats["files"] == 3 and from_http.stats["pages"] == 22 + 15 + 16
    counters = (
        "pages",
        "images",
        "with_alt",
        "pairs",
        "duplicates_in_snapshot",
        "relative_resolved",
        "non_http_dropped",
    )
    assert {k: from_http.stats[k] for k in counters} == {k: local.stats[k] for k in counters}
    assert pd.read_parquet(f"{from_http.uri}/data").equals(pd.read_parquet(f"{local.uri}/data"))
    # the same crawl from another mirror is the same artifact: a crawl's paths identify its files
    assert from_http.manifest["external"] == [{"commoncrawl": p} for p in paths]


def test_a_transient_error_is_retried_and_a_rerun_resumes(tmp_path, commoncrawl_mirror):
    base, mirror, paths, handler = commoncrawl_mirror
    store = ArtifactStore(tmp_path / "root")
    handler.fail_once.add("/" + paths[0])  # one 503: retried after 2 s, then read
    missing = mirror / paths[2]
    target = missing.readlink()
    missing.unlink()  # a file the mirror lost: not transient, the run fails
    with pytest.raises(CurationError) as e:
        run(store, INGEST, _ingest(base))
    assert paths[2] in str(e.value)
    assert not store.list("pairs")
    assert not handler.fail_once  # the 503 was met and retried
    parts = sorted(p.name for p in (tmp_path / "root" / "ingest-parts" / CRAWL).iterdir())
    assert len(parts) == 4 and all(p.endswith((".parquet", ".json")) for p in parts)  # two complete parts, no leftovers
    missing.symlink_to(target)
    log: list[str] = []
    pairs = run(store, INGEST, _ingest(base), log=log.append)
    assert pairs.stats["files"] == 3
    assert any("2 of 3 files already ingested" in line for line in log)
    fresh = run(ArtifactStore(tmp_path / "fresh"), INGEST, _ingest(base))
    assert fresh.version == pairs.version and fresh.stats == pairs.stats
    assert [(f.name, f.sha256) for f in fresh.data_files()] == [(f.name, f.sha256) for f in pairs.data_files()]


def test_bad_ingest_input_is_refused_before_anything_is_written(tmp_path, commoncrawl_mirror):
    base, *_ = commoncrawl_mirror
    store = ArtifactStore(tmp_path / "root")
    (tmp_path / "empty").mkdir()
    cases = [
        (IngestParams(CRAWL, ("CC-MAIN-2099-01",), cc_base=base), "unknown Common Crawl snapshot 'CC-MAIN-2099-01'"),
        (
            IngestParams(CRAWL, (CRAWL,), format="wat", cc_base=base),
            "crawl-data/CC-MAIN-2024-22/wat.paths.gz does not exist",
        ),
        (IngestParams(CRAWL, (str(tmp_path / "empty"),)), "holds no .warc.gz or .warc or .wat.gz or .wat file"),
        (IngestParams(CRAWL, (str(WARC / "whirlwind.warc.wet.gz"),)), "is a WET file"),
        (
            IngestParams(CRAWL, (str(WARC / "warcio_example.warc.gz"), str(WARC / "warcio_example.warc.gz"))),
            "given twice",
        ),
        (_ingest(base, languages=("en", "xx")), "unknown language code(s) xx"),
        (_ingest(base, languages=("any", "en")), "cannot be combined with en"),
        (IngestParams(CRAWL, (str(WARC / "whirlwind.warc.wat.gz"),)), "hold no image with an alt-text in en"),
    ]
    for params, message in cases:
        with pytest.raises(CurationError, match=message.replace("(", r"\(").replace(")", r"\)")):
            run(store, INGEST, params)
    assert not store.list("pairs")


def test_an_http_body_seeks_only_to_its_start(commoncrawl_mirror):
    """A seek to its start requests the body again (the WAT reader reads a file again so); no other seek."""
    base, mirror, paths, _ = commoncrawl_mirror
    with open_stream(base + paths[0]) as body:
        head = body.read(100)
        assert body.seekable() and body.tell() == 100 and body.seek(0, io.SEEK_CUR) == 100
        with pytest.raises(io.UnsupportedOperation, match="from its start only"):
            body.seek(10)
        assert body.seek(0) == 0 and body.read(100) == head == (mirror / paths[0]).read_bytes()[:100]
