"""The one kind of stage: stable versions, typed params and inputs, the stage table."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from metaclip_tasks.cli.main import build_parser
from metaclip_tasks.core import params as P
from metaclip_tasks.core.artifacts import ArtifactStore
from metaclip_tasks.core.errors import CurationError
from metaclip_tasks.core.stage import run
from metaclip_tasks.stages import (
    BALANCE,
    MATCH,
    METADATA_IMPORT,
    PAIRS_IMPORT,
    POOL_COUNTS,
    STAGES,
    BalanceParams,
    MatchParams,
    MetadataImportParams,
    PairsImportParams,
    PoolCountsParams,
)
from metaclip_tasks.stages.plan import Subset
from metaclip_tasks.training.train import TrainParams

REPO = Path(__file__).resolve().parents[2]
TEXTS = ["a red car", "black dog, photo", "nothing here", "red car and black dog", "dog"]
ENTRIES = ["red", "car", "red car", "dog", "black dog"]

CHAIN = """
import json, sys
from dataclasses import replace
from metaclip_tasks.core.artifacts import ArtifactStore
from metaclip_tasks.stages import *
from metaclip_tasks.core.stage import run
from metaclip_tasks.training.train import TrainParams

def chain(store, src, meta, match=MATCH):
    pairs = run(store, PAIRS_IMPORT, PairsImportParams("CC-MAIN-2023-06", (src,)))
    metadata = run(store, METADATA_IMPORT, MetadataImportParams(meta))
    matched = run(store, match, MatchParams(), {"pairs": pairs, "metadata": metadata})
    counts = run(store, POOL_COUNTS, PoolCountsParams("p", 0.3), {"matched": [matched], "metadata": metadata})
    curated = run(store, BALANCE, BalanceParams(1, 0), {"pool_counts": counts, "matched": [matched]})
    return {a.stage: a.version for a in (pairs, metadata, matched, counts, curated)}

if __name__ == "__main__":
    print(json.dumps(chain(ArtifactStore(sys.argv[1]), sys.argv[2], sys.argv[3])))
"""


@pytest.fixture
def inputs(tmp_path: Path) -> tuple[str, str]:
    src, meta = tmp_path / "in" / "pairs.parquet", tmp_path / "in" / "metadata.json"
    src.parent.mkdir()
    pq.write_table(pa.table({"url": [f"https://x/{i}.jpg" for i in range(len(TEXTS))], "text": TEXTS}), src)
    meta.write_text(json.dumps(ENTRIES))
    return str(src), str(meta)


def _chain_in(package_parent: Path, root: Path, inputs: tuple[str, str], script: Path) -> dict[str, str]:
    result = subprocess.run(
        [sys.executable, str(script), str(root), *inputs],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(package_parent), "PATH": ""},
        timeout=120,
        cwd=package_parent,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_editing_docs_changes_no_version(tmp_path: Path, inputs) -> None:
    """A README or docstring edit (a new commit, or no .git at all as in the Docker image) leaves every version."""
    script = tmp_path / "chain.py"
    script.write_text(CHAIN)
    copy = tmp_path / "copy"
    shutil.copytree(REPO / "metaclip_tasks", copy / "metaclip_tasks", ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "README.md").write_text((REPO / "README.md").read_text() + "\nAn edit.\n")
    table = copy / "metaclip_tasks" / "stages" / "__init__.py"
    table.write_text(table.read_text().replace('"""The stage table:', '"""The stage table (edited docstring):', 1))
    original = _chain_in(REPO, tmp_path / "a", inputs, script)
    edited = _chain_in(copy, tmp_path / "b", inputs, script)
    assert original == edited and len(original) == 5
    manifest = ArtifactStore(tmp_path / "a").require("matched", original["matched"]).manifest
    assert manifest["code"] == {"stage": "match", "stage_version": 1, "libraries": {}}


def test_bumping_a_stage_version_changes_it_and_everything_downstream(tmp_path: Path, inputs) -> None:
    namespace: dict = {}
    exec(CHAIN, namespace)  # noqa: S102 - the chain script the other tests run in a subprocess
    store = ArtifactStore(tmp_path / "root")
    before = namespace["chain"](store, *inputs)
    after = namespace["chain"](store, *inputs, match=dataclasses.replace(MATCH, version=2))
    assert [s for s in before if before[s] == after[s]] == ["pairs", "metadata"]  # upstream: unchanged
    assert [s for s in before if before[s] != after[s]] == ["matched", "pool_counts", "curated"]


def test_identity_params_make_the_version_and_the_location_does_not(tmp_path: Path, inputs) -> None:
    store = ArtifactStore(tmp_path / "root")
    moved = tmp_path / "elsewhere.parquet"
    shutil.copy(inputs[0], moved)
    a = run(store, PAIRS_IMPORT, PairsImportParams("CC-MAIN-2023-06", (inputs[0],)))
    b = run(store, PAIRS_IMPORT, PairsImportParams("CC-MAIN-2023-06", (str(moved),)))
    assert b.cache_hit and a.version == b.version  # same content elsewhere: the same pairs
    c = run(store, PAIRS_IMPORT, PairsImportParams("CC-MAIN-2023-06", (inputs[0],), rows_per_shard=2))
    assert c.version != a.version and c.stats["shards"] == 3
    pq.write_table(pa.table({"url": ["https://x/9.jpg"], "text": ["a cat"]}), moved)
    d = run(store, PAIRS_IMPORT, PairsImportParams("CC-MAIN-2023-06", (str(moved),)))
    assert d.version != a.version  # other content: another version


@dataclasses.dataclass(frozen=True)
class _Before:
    t: int = 5


@dataclasses.dataclass(frozen=True)
class _After:
    t: int = 5
    added: int | None = dataclasses.field(default=None, metadata={"identity": "when-set"})
    where: str = dataclasses.field(default="here", metadata={"identity": False})


def test_a_param_added_when_set_keeps_earlier_versions_until_it_is_set() -> None:
    """A param whose default keeps the earlier output ("when-set") is left out of the version at
    its default: adding it (e.g. the train stage's balance_t) leaves every existing checkpoint current."""
    assert P.identity(_After()) == P.identity(_Before()) == {"t": 5}
    assert P.identity(_After(added=3)) == {"t": 5, "added": 3}
    assert P.identity(_After(where="there")) == {"t": 5}
    assert "balance_t" not in P.identity(TrainParams()) and P.identity(TrainParams(balance_t=2))["balance_t"] == 2


def test_inputs_and_params_are_checked_before_anything_is_written(tmp_path: Path, inputs) -> None:
    store = ArtifactStore(tmp_path / "root")
    pairs = run(store, PAIRS_IMPORT, PairsImportParams("CC-MAIN-2023-06", (inputs[0],)))
    before = sorted(p.relative_to(tmp_path) for p in (tmp_path / "root").rglob("*"))
    cases = [
        (lambda: run(store, MATCH, MatchParams(), {"pairs": pairs}), "stage match needs its metadata input"),
        (
            lambda: run(store, MATCH, MatchParams(), {"pairs": pairs, "metadata": pairs}),
            "input metadata must be a metadata artifact, got a pairs artifact",
        ),
        (lambda: run(store, MATCH, BalanceParams(1), {}), "stage match takes MatchParams params, got BalanceParams"),
        (lambda: run(store, MATCH, MatchParams("regex"), {}), "parameter backend must be one of tokens, ahocorasick"),
        (lambda: run(store, BALANCE, BalanceParams(0), {}), "parameter t must be >= 1, got 0"),
        (lambda: run(store, BALANCE, BalanceParams("5"), {}), "parameter t must be integer, got '5'"),
        (lambda: run(store, POOL_COUNTS, PoolCountsParams("p", 1.0), {}), "parameter target_tail_ratio must be < 1"),
        (
            lambda: run(store, POOL_COUNTS, PoolCountsParams("p"), {"matched": [], "metadata": pairs}),
            "needs its matched input",
        ),
        (
            lambda: run(store, PAIRS_IMPORT, PairsImportParams("CC-MAIN-2023-07", (inputs[0],))),
            "unknown Common Crawl snapshot",
        ),
        (
            lambda: run(store, PAIRS_IMPORT, PairsImportParams("CC-MAIN-2023-06", (inputs[0],), text_column="TEXT")),
            "has no column 'TEXT'",
        ),
        (
            lambda: run(store, PAIRS_IMPORT, PairsImportParams("CC-MAIN-2023-06", ())),
            "parameter sources needs at least 1 item",
        ),
        (
            lambda: run(store, METADATA_IMPORT, MetadataImportParams(str(tmp_path / "none.json"))),
            "metadata file .* does not exist",
        ),
    ]
    for call, message in cases:
        with pytest.raises(CurationError, match=message):
            call()
    assert sorted(p.relative_to(tmp_path) for p in (tmp_path / "root").rglob("*")) == before


def test_from_mapping_checks_types_bounds_and_names() -> None:
    assert P.from_mapping(Subset, {"pool": "demo", "t": 5}) == Subset("demo", 5)
    assert P.from_mapping(Subset, {"t": None, "target_tail_ratio": 1 / 2}).target_tail_ratio == 0.5
    for values, message in [
        ({"t": True}, "parameter t must be integer, got True"),
        ({"t": 2.5}, "parameter t must be integer"),
        ({"seed": -1}, "parameter seed must be >= 0"),
        ({"target_tail_ratio": 0}, "parameter target_tail_ratio must be > 0"),
        ({"target_tail_ratio": 1}, "parameter target_tail_ratio must be < 1"),
        ({"pool": None}, "parameter pool must not be empty"),
        ({"colour": "red"}, "unknown parameter"),
    ]:
        with pytest.raises(CurationError, match=message):
            P.from_mapping(Subset, values)


def test_cli_flags_come_from_the_params_dataclasses() -> None:
    parser = build_parser()
    args = parser.parse_args(["balance", "--pool", "demo"])
    assert P.from_arguments(Subset, args) == Subset("demo")
    args = parser.parse_args(
        ["pairs", "--snapshot", "CC-MAIN-2023-06", "--sources", "a.parquet", "b.parquet", "--rows", "0", "5"]
    )
    assert P.from_arguments(PairsImportParams, args) == PairsImportParams(
        "CC-MAIN-2023-06", ("a.parquet", "b.parquet"), rows=(0, 5)
    )
    match = parser.parse_args(["match", "CC-MAIN-2023-06"])
    assert P.from_arguments(MatchParams, match) == MatchParams()
    help_text = parser._subparsers._group_actions[0].choices["balance"].format_help()
    for f in dataclasses.fields(Subset):
        assert "--" + f.name.replace("_", "-") in help_text and f.metadata["help"][:20] in help_text.replace(
            "\n", " "
        ).replace("  ", " ")


def test_the_stage_table_is_complete_and_consistent() -> None:
    kinds = {s.artifact for s in STAGES.values()}
    for stage in STAGES.values():
        assert stage.version >= 1 and dataclasses.is_dataclass(stage.params)
        assert all(i.stage in kinds for i in stage.inputs.values()), stage.name
        for f in dataclasses.fields(stage.params):
            P.json_schema(stage.params, f.name)  # every field has a schema (an Airflow Param)
    assert {"pairs", "metadata", "matched", "pool_counts", "curated", "downloaded", "checkpoint", "metrics"} <= kinds
