"""The curation view's API on a 500k-entry pool (issue 12: every endpoint under 200 ms).

A pool_counts artifact of 500,000 entries with Zipf-like counts (exponent 1.1, ~45M matches,
t from a 0.06 target tail ratio), a metadata input and a curated subset, in a temporary store.
Each JSON endpoint is called through FastAPI's TestClient on the plugin's app, with Airflow's
access checks replaced by an allow-all (the auth dependencies are measured by none of these):
the first call (the counts loaded and sorted) and the median of ``--rounds`` warm calls.

    .venv/bin/python -m benchmarks.curation_view [--entries 500000] [--rounds 21]
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from metaclip_tasks.core.artifacts import DATA, Artifact, ArtifactStore, version_for
from metaclip_tasks.core.shards import part_name
from metaclip_tasks.curation.balancing import t_for_tail_ratio, tail_ratio
from metaclip_tasks.curation.counting import COUNTS_DTYPE
from metaclip_tasks.curation.report import STANDARD_TS, tail_ratios
from metaclip_tasks.ui.curation_view import COUNTS, load_pool

REPO = Path(__file__).resolve().parents[1]


def zipf_counts(n: int, exponent: float = 1.1, top: int = 5_000_000, seed: int = 0) -> np.ndarray:
    """Counts that fall like rank**-exponent from ``top``, shuffled over entry ids, with a tenth never matched."""
    rng = np.random.default_rng(seed)
    counts = np.floor(top / np.arange(1, n + 1) ** exponent).astype(COUNTS_DTYPE)
    counts[rng.random(n) < 0.1] = 0
    return rng.permutation(counts)


def publish_metadata(store: ArtifactStore, entries: Sequence[str]) -> Artifact:
    """A metadata artifact of these entries (its version from their content)."""
    return store.publish(
        "metadata",
        version_for({"bench-metadata": list(entries)}),
        {"params": {"source": "benchmark"}, "inputs": []},
        lambda out: out.write_json("entries.json", list(entries)) or {"entries": len(entries)},
    )


def publish_pool_counts(
    store: ArtifactStore, pool: str, counts: np.ndarray, metadata: Artifact, target: float = 0.06
) -> Artifact:
    """A pool_counts artifact as the stage writes it: counts.npy, the (entry_id, entry, count) rows, its stats."""
    entries = metadata.read_json("entries.json")
    t = t_for_tail_ratio(counts, target)

    def build(out: Any) -> dict[str, Any]:
        out.save_array(COUNTS, counts)
        table = pa.table(
            {"entry_id": pa.array(np.arange(len(counts), dtype=np.int32)), "entry": entries, "count": counts}
        )
        with out.writer(f"{DATA}/{part_name(0)}") as f:
            pq.write_table(table, f, compression="zstd")
        return {
            "snapshots": ["CC-MAIN-2023-06"],
            "matches": int(counts.sum()),
            "entries": len(counts),
            "t": t,
            "tail_ratio": tail_ratio(counts, t),
            "head_entries": int((counts >= t).sum()),
            "tail_ratios": tail_ratios(counts, STANDARD_TS),
        }

    version = version_for(
        {"bench-pool": pool, "metadata": metadata.version, "counts": counts.tobytes().hex()[:64], "n": len(counts)}
    )
    header = {"params": {"pool": pool, "target_tail_ratio": target}, "inputs": [{"role": "metadata", **metadata.ref}]}
    return store.publish("pool_counts", version, header, build)


def publish_curated(store: ArtifactStore, pool_counts: Artifact, t: int, kept: int) -> Artifact:
    """A curated artifact's manifest (no rows) made from ``pool_counts`` at ``t``: what the view reads of it."""
    counts = pool_counts.read_array(COUNTS)
    stats = {
        "t": t,
        "seed": 0,
        "tail_ratio": tail_ratio(counts, t),
        "kept": kept,
        "expected_kept": float(kept),
        "pool": pool_counts.params["pool"],
    }
    header = {"params": {"t": t, "seed": 0}, "inputs": [{"role": "pool_counts", **pool_counts.ref}]}
    return store.publish(
        "curated", version_for({"bench-curated": pool_counts.version, "t": t}), header, lambda out: stats
    )


def timed(call: Any, rounds: int) -> tuple[float, float]:
    """(first call, median of ``rounds`` more) in milliseconds."""
    times = []
    for _ in range(rounds + 1):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    return times[0], statistics.median(times[1:])


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=500_000)
    parser.add_argument("--rounds", type=int, default=21)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="metaclip-view-bench-") as root:
        os.environ.update(
            METACLIP_ROOT=root, AIRFLOW_HOME=os.path.join(root, "airflow")
        )  # Airflow's config stays in the temp dir
        store = ArtifactStore(root)
        metadata = publish_metadata(store, [f"entry {i}" for i in range(args.entries)])
        counts = zipf_counts(args.entries)
        pool = publish_pool_counts(store, "bench", counts, metadata)
        publish_curated(store, pool, pool.stats["t"], int(np.minimum(counts, pool.stats["t"]).sum() * 0.8))
        sys.path.insert(0, str(REPO / "plugins"))
        import metaclip_curation_view as plugin
        from fastapi.testclient import TestClient

        app = plugin.view_app()
        for check in plugin.access_checks():
            app.dependency_overrides[check] = lambda: None
        client = TestClient(app)
        logging.disable(logging.INFO)  # no line per request
        client.get("/api/pools").raise_for_status()  # the client's own start-up, not an endpoint's
        start = time.perf_counter()
        load_pool(root, pool.version)
        load_ms = (time.perf_counter() - start) * 1000
        load_pool.cache_clear()
        v = pool.version
        print(
            f"pool: {args.entries:,} entries, {int(counts.sum()):,} matches, t = {pool.stats['t']:,}; "
            f"loading and sorting the counts {load_ms:.1f} ms; first call and median of {args.rounds} warm calls, ms"
        )
        for path in (
            "/api/pools",
            f"/api/pool_counts/{v}",
            f"/api/pool_counts/{v}/distribution",
            f"/api/pool_counts/{v}/cumulative",
            f"/api/pool_counts/{v}/cumulative?t=1000",
            f"/api/pool_counts/{v}/t_curve",
            f"/api/pool_counts/{v}/at?t=20000",
            f"/api/pool_counts/{v}/top?k=100",
            f"/api/artifacts/pool_counts/{v}",
            f"/pool_counts/{v}",
        ):

            def get(path: str = path) -> None:
                response = client.get(path)
                response.raise_for_status()

            first, warm = timed(get, args.rounds)
            print(
                f"{path.replace(v, '{v}'):<42} first {first:8.1f}  warm {warm:7.1f}  ({len(client.get(path).content):,} bytes)"
            )
            load_pool.cache_clear()  # every endpoint's first call loads the counts itself


if __name__ == "__main__":
    main()
