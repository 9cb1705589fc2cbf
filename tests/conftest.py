"""Shared fixtures: the real data in ../shared/data (skipped with a reason when absent)."""

from __future__ import annotations

import functools
import itertools
import json
import os
import shutil
import tempfile
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from metaclip_tasks.dev.shared_data import CAPTIONS, COCO
from metaclip_tasks.metadata.wordnet import DEFAULT_WORDNET_DIR, wordnet_entries


def pytest_configure(config: pytest.Config) -> None:
    """The suite's own record of checked files (metaclip_tasks.core.checked), shared with the Dask workers
    and Airflow processes it starts, never the user's."""
    os.environ["METACLIP_CHECKED_DIR"] = tempfile.mkdtemp(prefix="metaclip-checked-tests-")


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(os.environ.pop("METACLIP_CHECKED_DIR", ""), ignore_errors=True)


@pytest.fixture(scope="session")
def captions_table() -> pa.Table:
    """The 10,000 real web captions as (url, text)."""
    if not CAPTIONS.is_file():
        pytest.skip(f"shared real captions not found at {CAPTIONS} (../shared/data is absent)")
    return pq.read_table(CAPTIONS, columns=["URL", "TEXT"]).rename_columns(["url", "text"])


@pytest.fixture(scope="session")
def wordnet() -> list[str]:
    """MetaCLIP's WordNet entries (Debian's wordnet-base)."""
    if not (DEFAULT_WORDNET_DIR / "data.noun").is_file():
        pytest.skip(f"WordNet not installed at {DEFAULT_WORDNET_DIR}: apt-get install wordnet-base")
    return wordnet_entries()


@pytest.fixture
def metadata_file(tmp_path: Path, wordnet: list[str]) -> Path:
    path = tmp_path / "metadata.json"
    path.write_text(json.dumps(wordnet))
    return path


@pytest.fixture
def pair_shards(tmp_path: Path, captions_table: pa.Table) -> list[Path]:
    """The real captions split into three parquet shards of pairs."""
    shards = []
    bounds = [0, 3000, 6500, len(captions_table)]
    for i, (a, b) in enumerate(itertools.pairwise(bounds)):
        path = tmp_path / "pairs" / f"part-{i}.parquet"
        path.parent.mkdir(exist_ok=True)
        pq.write_table(captions_table.slice(a, b - a), path)
        shards.append(path)
    return shards


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="session")
def coco_server():
    """The shared COCO images served by a real HTTP server on 127.0.0.1 for the whole session
    (URLs written into pairs stay valid across tests); yields its base URL."""
    if not (COCO / "annotations" / "captions_val2017.json").is_file():
        pytest.skip(f"shared COCO images not found at {COCO} (../shared/data is absent)")
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(COCO)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="session")
def coco_pairs(coco_server: str) -> tuple[list[str], list[str]]:
    """(urls, texts) of the COCO val images on the server, each with its first real caption."""
    captions = json.loads((COCO / "annotations" / "captions_val2017.json").read_text())
    first_caption: dict[int, str] = {}
    for a in captions["annotations"]:
        first_caption.setdefault(a["image_id"], a["caption"])
    images = [i for i in captions["images"] if (COCO / "val2017" / i["file_name"]).is_file()]
    return [f"{coco_server}/val2017/{i['file_name']}" for i in images], [first_caption[i["id"]] for i in images]


@pytest.fixture(scope="session")
def s3_bucket():
    """A real S3 server (moto's standalone server) on 127.0.0.1 for the whole session, reached the way
    any S3 user configures it (the standard AWS_* variables); yields the URL of a fresh bucket."""
    from metaclip_tasks.dev.local_s3 import local_s3

    with local_s3("metaclip-test") as url:
        yield url


TINY_TEXTS = ["a red car", "black dog, photo", "nothing here", "red car and black dog", "dog", "a car"] * 50


@pytest.fixture
def small_chain(tmp_path: Path):
    """A small chain on a local root, in this process: raw pairs (2 files) -> pairs -> metadata ->
    matched -> pool_counts -> curated; returns a namespace of the store, the artifacts and the inputs."""
    from types import SimpleNamespace

    from metaclip_tasks.core.artifacts import ArtifactStore
    from metaclip_tasks.core.snapshots import Pool
    from metaclip_tasks.core.stage import run
    from metaclip_tasks.stages import METADATA_IMPORT, PAIRS_IMPORT, MetadataImportParams, PairsImportParams, plan

    raw = tmp_path / "raw"
    raw.mkdir()
    for i in range(2):
        texts = TINY_TEXTS[i::2]
        pq.write_table(
            pa.table({"url": [f"https://x/{i}/{k}.jpg" for k in range(len(texts))], "text": texts}),
            raw / f"part-{i}.parquet",
        )
    (tmp_path / "metadata.json").write_text(json.dumps(["red", "car", "red car", "dog", "black dog", "photo"]))
    store = ArtifactStore(tmp_path / "root")
    pairs = run(store, PAIRS_IMPORT, PairsImportParams("CC-MAIN-2023-06", (str(raw),)))
    meta = run(store, METADATA_IMPORT, MetadataImportParams(str(tmp_path / "metadata.json")))
    matched = plan.match(store, pairs, meta)
    pool = Pool("small", ("CC-MAIN-2023-06",), 0.3)
    counts = plan.count_pool(store, pool, meta, [matched])
    curated = plan.balance(store, counts, 20, 0)
    return SimpleNamespace(
        store=store,
        root=tmp_path / "root",
        raw=raw,
        pairs=pairs,
        meta=meta,
        matched=matched,
        pool=pool,
        counts=counts,
        curated=curated,
    )


@pytest.fixture
def cli(monkeypatch):
    """``metaclip`` run in this process (argparse exits included): ``cli(*args, pools=None)`` returns
    (status, stdout, stderr).  The subprocess tests cover the installed script itself."""
    import contextlib
    import io

    from metaclip_tasks.cli import main

    def run(*args, pools: Path | None = None) -> tuple[int, str, str]:
        for name in ("METACLIP_ROOT", "DASK_SCHEDULER_ADDRESS"):
            monkeypatch.delenv(name, raising=False)
        if pools is not None:
            monkeypatch.setenv("METACLIP_POOLS", str(pools))
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                status = main([str(a) for a in args])
            except SystemExit as e:
                status = e.code if isinstance(e.code, int) else 1
        return status, out.getvalue(), err.getvalue()

    return run


CRAWL = "CC-MAIN-2024-22"  # the crawl of the whirlwind files


class _FlakyHandler(_QuietHandler):
    """Serves a directory; each path in ``fail_once`` answers 503 to its first GET (a transient error)."""

    fail_once: ClassVar[set[str]] = set()

    def do_GET(self) -> None:
        if self.path in self.fail_once:
            self.fail_once.discard(self.path)
            self.send_error(503, "try again")
            return
        super().do_GET()


@pytest.fixture
def commoncrawl_mirror(tmp_path: Path):
    """A Common Crawl mirror on 127.0.0.1: ``crawl-data/CC-MAIN-2024-22/warc.paths.gz`` listing the
    shared WARC files (linked, not copied) under ``segments/``; yields (base URL, mirror folder, served
    paths, the handler class whose ``fail_once`` injects 503s)."""
    import gzip

    from metaclip_tasks.dev.shared_data import WARC

    if not (WARC / "warc_sample-0000.warc.gz").is_file():
        pytest.skip(f"shared WARC samples not found at {WARC} (../shared/data is absent)")
    mirror = tmp_path / "mirror"
    segment = mirror / "crawl-data" / CRAWL / "segments" / "1716000000000.0" / "warc"
    segment.mkdir(parents=True)
    paths = []
    for name in ("warc_sample-0000.warc.gz", "warc_sample-0001.warc.gz", "resiliparse_warcfile.warc.gz"):
        (segment / name).symlink_to(WARC / name)
        paths.append(str((segment / name).relative_to(mirror)))
    with gzip.open(mirror / "crawl-data" / CRAWL / "warc.paths.gz", "wt") as f:
        f.write("".join(p + "\n" for p in paths))
    handler = type("Handler", (_FlakyHandler,), {"fail_once": set()})
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(mirror)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", mirror, paths, handler
    server.shutdown()
    server.server_close()
