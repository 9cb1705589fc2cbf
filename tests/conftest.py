"""Shared fixtures: the real data in ../shared/data (skipped with a reason when absent)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from metaclip_tasks.metadata.wordnet import DEFAULT_WORDNET_DIR, wordnet_entries
from metaclip_tasks.shared_data import CAPTIONS


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
    for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        path = tmp_path / "pairs" / f"part-{i}.parquet"
        path.parent.mkdir(exist_ok=True)
        pq.write_table(captions_table.slice(a, b - a), path)
        shards.append(path)
    return shards
