"""The metaclip command line, run as a real process on an artifact root: the stages end to end on the
real captions, re-runs as cache hits, and bad input (one line, status 1, nothing written)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from metaclip_tasks.core.artifacts import ArtifactStore
from metaclip_tasks.curation.balancing import entry_probabilities, keep_mask, tail_ratio, tail_ratio_warning
from metaclip_tasks.curation.matching import Matcher
from metaclip_tasks.dev.shared_data import CAPTIONS
from metaclip_tasks.ingest.uids import url_uid
from metaclip_tasks.stages import STAGES

SCRIPT = Path(sys.executable).parent / "metaclip"
SNAPSHOTS = ("CC-MAIN-2023-06", "CC-MAIN-2023-14", "CC-MAIN-2023-23")
BOUNDS = (0, 3000, 6500, 10_000)  # the 10,000 captions split over the three snapshots
POOLS = f"""
[three]
description = "the real captions over three crawls"
snapshots = {json.dumps(list(SNAPSHOTS))}
target_tail_ratio = 0.3

[unmatched]
snapshots = ["CC-MAIN-2023-06", "CC-MAIN-2023-40"]
"""


def metaclip(*args: str | Path, pools: Path | None = None) -> subprocess.CompletedProcess:
    command = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "metaclip_tasks.cli.main"]
    unset = ("METACLIP_ROOT", "METACLIP_POOLS", "DASK_SCHEDULER_ADDRESS")  # only what each call says
    env = {k: v for k, v in os.environ.items() if k not in unset}
    if pools is not None:
        env["METACLIP_POOLS"] = str(pools)
    return subprocess.run(
        [*command, *map(str, args)], check=False, capture_output=True, text=True, timeout=300, env=env
    )


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def _version(stdout_line: str, stage: str) -> str:
    """The version in a command's summary line ``<stage> <version> (built|cache hit): ...``."""
    kind, version, *_ = stdout_line.split()
    assert kind == stage, stdout_line
    return version


# -- help -------------------------------------------------------------------------------------------

HELP = [
    ("pairs-import", "--rows-per-shard"),
    ("pairs", "--rows-per-shard"),
    ("ingest", "--languages"),
    ("match", "--metadata-version"),
    ("pool-counts", "--pool"),
    ("count", "--pool"),
    ("choose-t", "--target-tail-ratio"),
    ("balance", "--seed"),
    ("download", "--image-size"),
    ("train", "--epochs"),
    ("evaluate", "--eval-set"),
    ("t-ablation", "--tail-ratios"),
    ("metadata-build", "--min-pmi"),
    ("metadata-import", "path"),
    ("metadata-stats", "version"),
    ("metadata", "import"),
    ("metadata build", "--min-pmi"),
    ("metadata import", "path"),
    ("metadata stats", "version"),
    ("artifacts", "lineage"),
    ("artifacts list", "--stage"),
    ("artifacts verify", "version"),
    ("artifacts show", "version"),
    ("artifacts lineage", "version"),
    ("stages", "--root"),
    ("results", "--root"),
    ("demo", "--target-tail-ratio"),
]


@pytest.mark.parametrize(("command", "flag"), HELP, ids=[c for c, _ in HELP])
def test_every_command_explains_itself(cli, command: str, flag: str) -> None:
    status, out, _ = cli(*command.split(), "--help")
    assert status == 0 and out.startswith(f"usage: metaclip {command}") and flag in out and len(out) > 140, out


def test_the_top_level_help_lists_every_command() -> None:
    out = ok(metaclip("--help"))  # the installed script
    for command in (
        "pairs-import",
        "ingest",
        "metadata-build",
        "metadata-import",
        "metadata-stats",
        "match",
        "pool-counts",
        "choose-t",
        "balance",
        "download",
        "train",
        "evaluate",
        "t-ablation",
        "artifacts",
        "stages",
        "results",
        "demo",
        "pairs",
        "count",
        "metadata",
    ):
        assert any(line.split()[:1] == [command] for line in out.splitlines()), command


# -- the chain on the real captions ------------------------------------------------------------------


@pytest.fixture(scope="module")
def chain(tmp_path_factory, captions_table: pa.Table) -> dict:
    """The real captions as three snapshots' pairs, matched against WordNet, counted, balanced: every
    step a ``metaclip`` process on one root.  Returns where everything is and what each command said."""
    tmp = tmp_path_factory.mktemp("cli")
    pools = tmp / "pools.toml"
    pools.write_text(POOLS)
    root = tmp / "root"
    third = tmp / "third"  # the last snapshot from a directory of parquet with the default column names
    third.mkdir()
    pq.write_table(captions_table.slice(BOUNDS[2]), third / "part-0.parquet")
    out: dict[str, list[str]] = {}
    for i, snapshot in enumerate(SNAPSHOTS[:2]):
        args = ["--snapshot", snapshot, "--sources", CAPTIONS, "--url-column", "URL", "--text-column", "TEXT"]
        args += ["--rows", BOUNDS[i], BOUNDS[i + 1], *(["--rows-per-shard", "2000"] if i == 1 else [])]
        out[snapshot] = ok(metaclip("pairs", "--root", root, *args, "--workers", "0")).splitlines()
    out[SNAPSHOTS[2]] = ok(
        metaclip("pairs", "--root", root, "--snapshot", SNAPSHOTS[2], "--sources", third, "--workers", "0")
    ).splitlines()
    out["match"] = ok(metaclip("match", "--root", root, *SNAPSHOTS, "--workers", "2")).splitlines()  # on Dask
    out["count"] = ok(metaclip("count", "--root", root, "--pool", "three", "--top", "5", pools=pools)).splitlines()
    chosen = json.loads(
        ok(metaclip("choose-t", "--root", root, "--pool", "three", "--target-tail-ratio", "0.3", "--json", pools=pools))
    )
    given = ok(metaclip("choose-t", "--root", root, "--pool", "three", "--t", chosen["t"], pools=pools))
    out["balance"] = ok(
        metaclip(
            "balance",
            "--root",
            root,
            "--pool",
            "three",
            "--target-tail-ratio",
            "0.3",
            "--seed",
            "4",
            "--workers",
            "0",
            pools=pools,
        )
    ).splitlines()
    return {"root": root, "pools": pools, "out": out, "chosen": chosen, "given": given, "third": third}


@pytest.mark.cluster
def test_pairs_are_the_real_captions_split_over_three_snapshots(chain: dict, captions_table: pa.Table) -> None:
    store = ArtifactStore(chain["root"])
    for i, snapshot in enumerate(SNAPSHOTS):
        (line,) = chain["out"][snapshot]
        assert " (built): " in line and f"{BOUNDS[i + 1] - BOUNDS[i]:,} pairs of {snapshot}" in line
        pairs = store.require("pairs", _version(line, "pairs"))
        assert pairs.params["snapshot"] == snapshot and pairs.stats["pairs"] == BOUNDS[i + 1] - BOUNDS[i]
        assert len(pairs.data_files()) == (2 if i == 1 else 1)
        rows = pairs.dataset().to_table()
        expected = captions_table.slice(BOUNDS[i], BOUNDS[i + 1] - BOUNDS[i])
        assert rows.column_names == ["uid", "url", "text", "page_url", "lang", "title"]
        assert rows["url"].to_pylist() == expected["url"].to_pylist()
        assert rows["text"].to_pylist() == expected["text"].to_pylist()
        assert rows["uid"].to_pylist() == [url_uid(u) for u in expected["url"].to_pylist()]


@pytest.mark.cluster
def test_match_counts_equal_the_matcher_run_directly(chain: dict, captions_table: pa.Table, wordnet: list[str]) -> None:
    store = ArtifactStore(chain["root"])
    matcher = Matcher(wordnet)
    assert len(chain["out"]["match"]) == 3
    total = np.zeros(len(wordnet), np.uint64)
    for i, (snapshot, line) in enumerate(zip(SNAPSHOTS, chain["out"]["match"], strict=True)):
        matched = store.require("matched", _version(line, "matched"))
        assert f"{snapshot}: matched " in line and matched.stats["snapshot"] == snapshot
        metadata = matched.input("metadata")
        assert metadata.read_json("entries.json") == wordnet  # the default metadata: MetaCLIP's WordNet entries
        texts = captions_table["text"].to_pylist()[BOUNDS[i] : BOUNDS[i + 1]]
        direct = matcher.match_batch(texts)
        counts = matched.read_array("counts.npy")
        assert counts.tolist() == np.bincount(direct.entry_ids, minlength=len(wordnet)).tolist()
        lists = direct.to_lists()
        rows = matched.dataset().to_table()
        assert rows["matched_entry_ids"].to_pylist() == [ids for ids in lists if ids]  # unmatched pairs dropped
        assert rows["text"].to_pylist() == [t for t, ids in zip(texts, lists, strict=True) if ids]
        assert matched.stats["pairs_in"] == len(texts) and matched.stats["pairs_matched"] == rows.num_rows
        assert matched.stats["matches"] == len(direct.entry_ids)
        total += counts
    counts_line, *top = chain["out"]["count"]
    pool_counts = store.require("pool_counts", _version(counts_line, "pool_counts"))
    assert np.array_equal(pool_counts.read_array("counts.npy"), total)
    assert pool_counts.stats["snapshots"] == list(SNAPSHOTS) and pool_counts.stats["matches"] == int(total.sum())
    assert len(top) == 5 and top[0].split() == [f"{int(total.max()):,}", "in"]  # the top entry of these captions
    assert f"t={pool_counts.stats['t']}" in counts_line and pool_counts.params["target_tail_ratio"] == 0.3


@pytest.mark.cluster
def test_choose_t_warns_of_a_target_the_pool_cannot_reach(chain: dict) -> None:
    """A 6% tail on 9,000 captions: t=1 (nothing in the tail), said on stderr with the two nearest
    achievable ratios and in the JSON; the reachable 30% has no warning."""
    assert chain["chosen"]["warnings"] == []
    result = metaclip(
        "choose-t",
        "--root",
        chain["root"],
        "--pool",
        "three",
        "--target-tail-ratio",
        "0.06",
        "--json",
        pools=chain["pools"],
    )
    chosen = json.loads(ok(result))
    counts = ArtifactStore(chain["root"]).list("pool_counts")[-1].read_array("counts.npy")
    expected = tail_ratio_warning(counts, 0.06)
    assert chosen["t"] == 1 and chosen["warnings"] == [expected]
    assert expected.startswith("target tail ratio 0.06 is not reachable on this pool: t=1 gives 0.0000, t=2 gives ")
    assert f"metaclip: warning: {expected}" in result.stderr.splitlines()


@pytest.mark.cluster
def test_choose_t_and_balance_keep_what_keep_mask_keeps(chain: dict) -> None:
    store = ArtifactStore(chain["root"])
    chosen = chain["chosen"]
    counts_artifact = store.list("pool_counts")[-1]
    counts = counts_artifact.read_array("counts.npy")
    assert chosen["t"] == counts_artifact.stats["t"] >= 1 and chosen["target_tail_ratio"] == 0.3
    assert chosen["tail_ratio"] == pytest.approx(tail_ratio(counts, chosen["t"]))
    assert chain["given"].strip() == f"t={chosen['t']} tail_ratio={chosen['tail_ratio']:.6f}"

    (line,) = chain["out"]["balance"]
    curated = store.require("curated", _version(line, "curated"))
    assert curated.params == {"t": chosen["t"], "seed": 4}
    probs = entry_probabilities(counts, chosen["t"])
    kept_total = 0
    for matched in curated.inputs("matched"):
        rows = matched.dataset().to_table()
        mask = keep_mask(rows["uid"], rows["matched_entry_ids"], probs, 4)
        snapshot = matched.stats["snapshot"]
        parts = curated.files(".parquet", under=f"data/{snapshot}")
        kept = pa.concat_tables(pq.read_table(curated.path(name)) for name in parts)
        assert kept["uid"].to_pylist() == rows.filter(pa.array(mask))["uid"].to_pylist()
        kept_total += kept.num_rows
    stats = curated.stats
    assert stats["t"] == chosen["t"] and stats["kept"] == kept_total and stats["kept_within_4_sd"]
    assert 0 < kept_total < stats["pairs_in"] == sum(m.stats["pairs_matched"] for m in curated.inputs("matched"))


def _all_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.cluster
def test_rerunning_a_command_is_a_cache_hit_with_identical_files(chain: dict) -> None:
    root, pools = chain["root"], chain["pools"]
    before = _all_files(root)
    again = [
        metaclip(
            "pairs",
            "--root",
            root,
            "--snapshot",
            SNAPSHOTS[0],
            "--sources",
            CAPTIONS,
            "--url-column",
            "URL",
            "--text-column",
            "TEXT",
            "--rows",
            BOUNDS[0],
            BOUNDS[1],
            "--workers",
            "0",
        ),
        metaclip("pairs", "--root", root, "--snapshot", SNAPSHOTS[2], "--sources", chain["third"], "--workers", "0"),
        metaclip("match", "--root", root, *SNAPSHOTS, "--workers", "0"),  # the engine does not change the output
        metaclip("count", "--root", root, "--pool", "three", pools=pools),
        metaclip(
            "balance",
            "--root",
            root,
            "--pool",
            "three",
            "--t",
            chain["chosen"]["t"],
            "--seed",
            "4",
            "--workers",
            "0",
            pools=pools,
        ),
    ]
    lines = [line for result in again for line in ok(result).splitlines() if "->" in line]
    assert len(lines) == 7 and all(" (cache hit): " in line for line in lines), lines
    assert lines[-1].split()[:2] == chain["out"]["balance"][0].split()[:2]  # the same curated version
    assert _all_files(root) == before


@pytest.mark.cluster
def test_artifacts_list_show_lineage_and_stages(chain: dict) -> None:
    root = chain["root"]
    listed = ok(metaclip("artifacts", "--root", root, "list")).splitlines()
    kinds = ["curated", "matched", "matcher", "metadata", "pairs", "pool_counts"]
    assert sorted({line.split()[0] for line in listed}) == kinds  # the matcher: made beside the metadata by match
    assert len(listed) == 3 + 3 + 1 + 1 + 1 + 1
    matched = ok(metaclip("artifacts", "--root", root, "list", "--stage", "matched")).splitlines()
    assert [line.split()[0] for line in matched] == ["matched"] * 3

    curated_version = _version(chain["out"]["balance"][0], "curated")
    shown = json.loads(ok(metaclip("artifacts", "--root", root, "show", "curated", curated_version)))
    assert shown == json.loads((root / "artifacts" / "curated" / curated_version / "manifest.json").read_text())
    assert shown["params"]["seed"] == 4 and {i["stage"] for i in shown["inputs"]} == {"pool_counts", "matched"}

    lineage = ok(metaclip("artifacts", "--root", root, "lineage", "curated", curated_version)).splitlines()
    assert lineage[0].startswith(f"curated {curated_version} ")
    depth = {line.split()[0]: (len(line) - len(line.lstrip())) // 2 for line in lineage}
    assert depth == {"curated": 0, "pool_counts": 1, "matched": 1, "pairs": 2, "metadata": 2}
    assert sum(line.strip().startswith("pairs ") for line in lineage) == 6  # three snapshots, under counts and curated

    results = ok(metaclip("results", "--root", root)).splitlines()
    assert len(results) == 2 and results[0].startswith("| metrics | model |")  # no model evaluated here: the header

    stages = ok(metaclip("stages")).splitlines()
    assert [line.split()[0] for line in stages] == list(STAGES)
    assert any(line.startswith("match ") and "pairs: pairs, metadata: metadata" in line for line in stages)


def test_metadata_import_stats_and_matching_against_it(tmp_path: Path, captions_table: pa.Table) -> None:
    root = tmp_path / "root"
    listed = tmp_path / "metadata.json"
    listed.write_text(json.dumps(["cat", "dog", "cat", "black cat", "in"]))
    line = ok(metaclip("metadata", "import", "--root", root, listed)).strip()
    assert " (built): 5 entries (1 duplicated)" in line
    version = _version(line, "metadata")
    stored = root / "artifacts" / "metadata" / version / "entries.json"
    assert json.loads(stored.read_text()) == ["cat", "dog", "cat", "black cat", "in"]
    assert json.loads(ok(metaclip("metadata", "stats", "--root", root, version))) == {"entries": 5, "by_source": {}}
    assert " (cache hit): " in ok(metaclip("metadata", "import", "--root", root, listed))

    wordnet_stats = json.loads(ok(metaclip("metadata", "stats", "--root", root)))  # the default: built once
    assert wordnet_stats["entries"] == 86_654 and wordnet_stats["by_source"] == {"wordnet": 86_654}

    shard = tmp_path / "pairs.parquet"
    pq.write_table(captions_table.slice(0, 1000), shard)
    ok(metaclip("pairs", "--root", root, "--snapshot", SNAPSHOTS[0], "--sources", shard, "--workers", "0"))
    line = ok(
        metaclip(
            "match",
            "--root",
            root,
            SNAPSHOTS[0],
            "--metadata-version",
            version,
            "--workers",
            "0",
            "--backend",
            "ahocorasick",
        )
    ).strip()
    matched = ArtifactStore(root).require("matched", _version(line, "matched"))
    assert matched.input("metadata").version == version
    direct = Matcher(["cat", "dog", "cat", "black cat", "in"]).match_batch(captions_table["text"].to_pylist()[:1000])
    assert matched.read_array("counts.npy").tolist() == np.bincount(direct.entry_ids, minlength=5).tolist()


# -- bad input --------------------------------------------------------------------------------------


def _written(root: Path) -> set[str]:
    """What a command wrote under the root: every file, every folder of a version (a complete or a
    half-written artifact, hidden temporary folders included) and every hidden entry.  The bare
    ``artifacts/<stage>/`` folders a failed build may leave are not artifacts and are not listed."""
    if not root.exists():
        return set()
    return {
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.is_file() or len(p.relative_to(root).parts) >= 3 or p.name.startswith(".")
    }


def _fails(result: tuple[int, str, str], message: str) -> None:
    status, out, err = result
    assert status == 1, result
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("metaclip: error: ") and message in lines[0], err
    assert "->" not in out, out  # no artifact reported as made


@pytest.mark.cluster
def test_bad_input_is_one_line_status_1_and_writes_nothing(tmp_path: Path, chain: dict, cli) -> None:
    pools = chain["pools"]
    populated = tmp_path / "populated"  # the chain's root: metadata, pairs and matches already there
    shutil.copytree(chain["root"], populated)
    empty = tmp_path / "empty"
    pq.write_table(pa.table({"URL": ["http://a/1.jpg", "http://a/2.jpg"], "TEXT": [1, 2]}), tmp_path / "ints.parquet")
    (tmp_path / "corrupt.parquet").write_bytes(b"PAR1garbagePAR1")
    for name, content in (("dict.json", '{"cat": 1}'), ("empty.json", "[]"), ("blank.json", '["cat", "  ", "dog"]')):
        (tmp_path / name).write_text(content)
    snapshot = ["--snapshot", SNAPSHOTS[0]]
    captions = ["--sources", CAPTIONS, "--url-column", "URL", "--text-column", "TEXT"]

    cases = [  # each run on the chain's root and on an empty root
        # pairs: the sources, their columns and types, the snapshot id, the rows
        (["pairs", *snapshot, "--sources", CAPTIONS], "has no column 'url', 'text' (its columns: URL, TEXT"),
        (
            [
                "pairs",
                *snapshot,
                "--sources",
                tmp_path / "ints.parquet",
                "--url-column",
                "URL",
                "--text-column",
                "TEXT",
            ],
            "ints.parquet: column 'TEXT' is int64, not string",
        ),
        (
            ["pairs", *snapshot, "--sources", tmp_path / "corrupt.parquet"],
            "corrupt.parquet is not a readable parquet file",
        ),
        ([*["pairs", *snapshot, *captions], "--rows", "5", "2"], "rows must be [start, stop) with 0 <= start <= stop"),
        # match: snapshots without pairs, unknown ids
        (["match", "CC-MAIN-2023-40"], "no pairs of CC-MAIN-2023-40"),
        (["match", "CC-MAIN-2023-52"], "unknown Common Crawl snapshot 'CC-MAIN-2023-52'"),
        # t: both or neither
        (
            ["choose-t", "--pool", "three", "--t", "3", "--target-tail-ratio", "0.1"],
            "give t (3) or target_tail_ratio (0.1), not both",
        ),
        (
            ["balance", "--pool", "three", "--t", "3", "--target-tail-ratio", "0.1"],
            "give t (3) or target_tail_ratio (0.1), not both",
        ),
        (["choose-t", "--pool", "three"], "give --t or --target-tail-ratio"),
        # metadata lists
        (["metadata", "import", tmp_path / "dict.json"], "dict.json holds a JSON dict, not a list of strings"),
        # pools
        (["count", "--pool", "nope"], "unknown pool 'nope' (known: three, unmatched)"),
    ]
    populated_only = [  # failing where the cases above fail already, or needing the chain's pairs and metadata
        (["pairs", *snapshot, "--sources", tmp_path / "nope.parquet"], "nope.parquet does not exist"),
        (["pairs", "--snapshot", "CC-MAIN-2023-52", *captions], "unknown Common Crawl snapshot 'CC-MAIN-2023-52'"),
        (
            [*["pairs", *snapshot, *captions], "--rows", "20000", "20010"],
            "no pairs to import: the sources hold 10000 rows",
        ),
        (["pairs", "--snapshot", "CC-MAIN-2023-99", *captions], "'CC-MAIN-2023-99' is not a Common Crawl id"),
        (["pairs", *snapshot, *captions, "--rows-per-shard", "0"], "parameter rows_per_shard must be >= 1, got 0"),
        (
            ["choose-t", "--pool", "three", "--target-tail-ratio", "1.5"],
            "parameter target_tail_ratio must be < 1, got 1.5",
        ),
        (["balance", "--pool", "three", "--t", "0"], "parameter t must be >= 1, got 0"),
        (["artifacts", "show", "curated", "0123456789abcdef"], "no complete curated artifact 0123456789abcdef"),
        (["metadata", "import", tmp_path / "empty.json"], "empty.json holds no entries"),
        (["metadata", "import", tmp_path / "blank.json"], "blank.json: entry 1 is blank ('  ')"),
        (["match", SNAPSHOTS[0], "CC-MAIN-2023-52"], "unknown Common Crawl snapshot 'CC-MAIN-2023-52'"),
        (
            ["match", SNAPSHOTS[0], "--metadata-version", "0123456789abcdef"],
            "no complete metadata artifact 0123456789abcdef",
        ),
        (["count", "--pool", "unmatched"], "pool unmatched: 1 snapshots are not matched yet: CC-MAIN-2023-40"),
        (
            ["balance", "--pool", "unmatched", "--t", "3"],
            "pool unmatched: 1 snapshots are not matched yet: CC-MAIN-2023-40",
        ),
    ]

    for root, todo in ((populated, cases + populated_only), (empty, cases)):
        for args, message in todo:
            before = _written(root)
            verb = 2 if args[0] == "metadata" else 1  # --root follows the (sub-)command that takes it
            _fails(cli(*args[:verb], "--root", root, *args[verb:], pools=pools), message)
            assert _written(root) == before, (args, _written(root) - before)
    assert _written(empty) == set()
    assert not [p for p in populated.rglob(".*")]  # no hidden temporary folder left behind

    usage = metaclip("choose-t", "--root", empty, "--pool", "three", "--t", "many", pools=pools)  # the real script
    assert usage.returncode == 2 and "invalid int value: 'many'" in usage.stderr and _written(empty) == set()
    script = metaclip("balance", "--root", empty, "--pool", "nope", pools=pools)
    _fails((script.returncode, script.stdout, script.stderr), "unknown pool 'nope'")
