"""The command table: a command named after every stage a user runs, the old names as aliases, the common
options (--root, --workers, --scheduler) on every command and verb, and the train, evaluate and
t-ablation commands refusing bad input with one line and nothing written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from metaclip_tasks.cli.main import COMMANDS, build_parser
from metaclip_tasks.core.artifacts import ArtifactStore
from metaclip_tasks.core.errors import CurationError
from metaclip_tasks.stages import STAGES, plan

MADE_WITHIN = {"matcher_build": "match", "download_view": "t-ablation"}  # stages made on the way by another command
ALIASES = [
    ("pairs", "pairs-import"),
    ("count", "pool-counts"),
    ("metadata build", "metadata-build"),
    ("metadata import", "metadata-import"),
    ("metadata stats", "metadata-stats"),
]
POOLS = '[small]\nsnapshots = ["CC-MAIN-2023-06"]\ntarget_tail_ratio = 0.3\n'  # the pool of the small_chain fixture


def _written(root: Path) -> set[str]:
    """Every file and folder under the root."""
    return {str(p.relative_to(root)) for p in root.rglob("*")} if root.exists() else set()


def _one_line_error(result: tuple[int, str, str], message: str, status: int = 1) -> None:
    """A refusal naming ``message``: one line with status 1, or argparse's usage error with status 2; no artifact."""
    code, out, err = result
    assert code == status, result
    if status == 1:
        assert err.startswith("metaclip: error: ") and err.count("\n") == 1, err
    assert message in err and "Traceback" not in err and "->" not in out, err


@pytest.fixture
def pools(tmp_path: Path) -> Path:
    """A pools file holding the small_chain fixture's pool."""
    path = tmp_path / "pools.toml"
    path.write_text(POOLS)
    return path


def test_every_stage_a_user_runs_has_a_command_named_after_it(cli) -> None:
    names = {c.name for c in COMMANDS}
    status, out, _ = cli("stages")
    assert status == 0
    shown = {line.split()[0]: line.split()[3] for line in out.splitlines()}  # stage -> the command that runs it
    for stage in STAGES:
        command = MADE_WITHIN.get(stage, stage.replace("_", "-"))
        assert command in names and shown[stage] == command, stage
        assert any(stage in c.stages for c in COMMANDS if c.name == command), stage
        if stage not in MADE_WITHIN:
            status, out, _ = cli(command, "--help")
            assert status == 0 and out.startswith(f"usage: metaclip {command} "), out


@pytest.mark.parametrize(("alias", "command"), ALIASES, ids=[a for a, _ in ALIASES])
def test_each_old_name_is_an_alias_of_its_command(cli, alias: str, command: str) -> None:
    parser = build_parser()
    required = {"pairs": ["--snapshot", "CC-MAIN-2023-06", "--sources", "x"], "metadata import": ["x.json"]}
    args = [*required.get(alias, [])]
    assert (
        parser.parse_args([*alias.split(), *args]).metaclip_command
        is parser.parse_args([command, *args]).metaclip_command
    )
    status, out, _ = cli(*alias.split(), "--help")
    assert status == 0 and f"Alias of {command}, kept for one release." in " ".join(out.split())
    listing = cli(*alias.split()[:1], "--help")[1] if " " in alias else cli("--help")[1]
    assert f"alias of {command}, kept for one release" in " ".join(listing.split())


def test_old_names_run_the_same_stages(small_chain, cli, pools: Path, tmp_path: Path) -> None:
    root, meta = small_chain.root, small_chain.meta.version
    for old, new in ((["pairs"], ["pairs-import"]), (["count"], ["pool-counts"])):
        args = (
            ["--snapshot", "CC-MAIN-2023-06", "--sources", small_chain.raw, "--workers", "0"]
            if old == ["pairs"]
            else ["--pool", "small", "--metadata-version", meta, "--top", "2"]
        )
        first, second = cli(*old, "--root", root, *args, pools=pools), cli(*new, "--root", root, *args, pools=pools)
        assert first[0] == second[0] == 0, (first, second)
        assert first[1].split()[:2] == second[1].split()[:2] and " (cache hit): " in second[1]
    listed = tmp_path / "m.json"
    listed.write_text(json.dumps(["red", "car"]))
    first, second = cli("metadata", "import", "--root", root, listed), cli("metadata-import", "--root", root, listed)
    assert first[1].split()[:2] == second[1].split()[:2] and " (cache hit): " in second[1]
    version = first[1].split()[1]
    assert cli("metadata", "stats", "--root", root, version)[1] == cli("metadata-stats", "--root", root, version)[1]


def test_root_is_taken_by_every_command_and_verb(small_chain, cli) -> None:
    root, curated = small_chain.root, small_chain.curated.version
    status, out, err = cli("artifacts", "list", "--root", root)
    assert status == 0 and curated in out, err
    assert cli("artifacts", "list", "--root", root, "--stage", "curated")[1].split()[:2] == ["curated", curated]
    status, out, err = cli("artifacts", "verify", "--root", root)
    assert status == 0 and f"ok      curated {curated}" in out, err
    status, out, err = cli("artifacts", "verify", "--root", root, "curated", curated)
    assert status == 0 and out.count("\n") == 1, err
    status, out, err = cli("artifacts", "show", "--root", root, "curated", curated)
    assert status == 0 and json.loads(out)["params"] == {"t": 20, "seed": 0}, err
    status, out, err = cli("artifacts", "lineage", "--root", root, "curated", curated)
    assert status == 0 and out.startswith(f"curated {curated} "), err
    status, out, err = cli("metadata-stats", "--root", root, small_chain.meta.version)
    assert status == 0 and json.loads(out)["entries"] == 6, err
    status, out, err = cli("results", "--root", root, "--workers", "3", "--scheduler", "tcp://nowhere:1")
    assert status == 0 and out.startswith("| metrics | model |"), err
    status, out, err = cli("stages", "--root", "nosuchprotocol://bucket/root")  # never opened
    assert status == 0 and len(out.splitlines()) == len(STAGES), err
    assert cli("artifacts", "list", "--root", Path(root) / "elsewhere")[1] == ""  # the verb's --root is the one used


def test_every_command_and_verb_takes_the_common_options(cli) -> None:
    names = [c.name for c in COMMANDS] + [a for c in COMMANDS for a in c.aliases] + ["artifacts", "metadata"]
    for name in names:
        status, out, _ = cli(*name.split(), "--help")
        assert status == 0 and all(flag in out for flag in ("--root", "--workers", "--scheduler")), name
    for command in COMMANDS:
        status, out, _ = cli(*command.name.split(), "--help")
        assert ("runs nothing on Dask" not in " ".join(out.split())) == command.dask, command.name


def test_bad_train_values_are_one_line_and_write_nothing(small_chain, cli, pools: Path, tmp_path: Path) -> None:
    subset = ["--pool", "small", "--metadata-version", small_chain.meta.version, "--t", "20"]
    version = "0123456789abcdef"
    cases = [
        (["--epochs", "0"], "parameter epochs must be >= 1, got 0"),
        (["--lr", "0"], "parameter lr must be > 0, got 0.0"),
        (["--global-batch-size", "0", "--recipe", "tiny-cpu"], "parameter global_batch_size must be >= 1, got 0"),
        (
            ["--downloaded", version, "--pool", "small"],
            "give --downloaded or the subset to train on (--pool), not both",
        ),
        (["--downloaded", version], f"no complete downloaded artifact {version}"),
        (["--pool", "nope"], "unknown pool 'nope'"),
        ([*subset, "--recipe", "tiny-cpu"], "no download of pool small's subset (t=20, seed 0) under "),
        ([*subset, "--download-budget", "1"], "download budget 1 is below the subset for t=20"),
    ]
    for root in (small_chain.root, tmp_path / "empty"):
        for args, message in cases if root == small_chain.root else cases[:5]:
            before = _written(root)
            _one_line_error(cli("train", "--root", root, *args, pools=pools), message)
            assert _written(root) == before, args
        before = _written(root)
        _one_line_error(cli("train", "--root", root, "--device", "tpu"), "invalid choice: 'tpu'", status=2)
        assert _written(root) == before
    assert not (tmp_path / "empty").exists()


def test_bad_t_ablation_values_are_one_line_and_write_nothing(small_chain, cli, pools: Path, tmp_path: Path) -> None:
    pool = ["--pool", "small", "--metadata-version", small_chain.meta.version]
    one_list = "give t_values or tail_ratios (one non-empty list), not both"
    cases = [
        ([*pool, "--t-values", "5", "20", "--tail-ratios", "0.3"], one_list),
        (pool, one_list),
        ([*pool, "--t-values", "5", "--train"], "train needs download: the models train on the downloaded images"),
        ([*pool, "--t-values", "0", "5"], "parameter t_values[0] must be >= 1, got 0"),
        ([*pool, "--tail-ratios", "1.5"], "parameter tail_ratios[0] must be < 1, got 1.5"),
        (["--pool", "nope", "--t-values", "5"], "unknown pool 'nope'"),
        (
            [
                *pool,
                "--t-values",
                "5",
                "--download",
                "--train",
                "--recipe",
                "tiny-cpu",
                "--eval-set",
                tmp_path / "nope",
            ],
            f"eval set {tmp_path / 'nope'} is not a COCO-style folder",
        ),
        (
            [*pool, "--t-values", "5", "--download", "--train", "--recipe", "tiny-cpu", "--epochs", "0"],
            "parameter epochs must be >= 1, got 0",
        ),
    ]
    for root in (small_chain.root, tmp_path / "empty"):
        for args, message in cases if root == small_chain.root else cases[:4]:
            before = _written(root)
            _one_line_error(cli("t-ablation", "--root", root, "--workers", "0", *args, pools=pools), message)
            assert _written(root) == before, args
    assert not (tmp_path / "empty").exists()


def test_t_ablation_compares_the_subsets_of_each_t(small_chain, cli, pools: Path) -> None:
    root = small_chain.root
    args = ["--root", root, "--pool", "small", "--metadata-version", small_chain.meta.version, "--workers", "0"]
    status, out, err = cli("t-ablation", *args, "--t-values", "20", "5", "20", pools=pools)
    assert status == 0, err
    *table, line = out.splitlines()
    assert table[0].startswith("| t | tail ratio |") and len(table) == 4  # header, rule, one row per distinct t
    assert line.startswith("t_ablation ") and " (built): pool small: t = 5, 20; subsets nested: True -> " in line
    ablation = ArtifactStore(root).require("t_ablation", line.split()[1])
    assert [a.version for a in ablation.inputs("curated")][-1] == small_chain.curated.version  # t=20: the fixture's
    assert [row["t"] for row in ablation.stats["rows"]] == [5, 20] and not ablation.inputs("downloaded")
    status, again, err = cli("t-ablation", *args, "--t-values", "5", "20", pools=pools)
    assert status == 0 and again.splitlines()[-1] == line.replace("(built)", "(cache hit)"), err


def test_evaluate_needs_a_checkpoint_and_an_eval_set(cli, tmp_path: Path) -> None:
    root = tmp_path / "root"
    _one_line_error(cli("evaluate", "--root", root), f"no checkpoint under {root}: train one first")
    _one_line_error(
        cli("evaluate", "--root", root, "--checkpoint", "0123456789abcdef"),
        "no complete checkpoint artifact 0123456789abcdef",
    )
    assert not root.exists()
    (tmp_path / "coco" / "annotations").mkdir(parents=True)
    for eval_set, message in (
        (tmp_path / "nope", "is not a COCO-style folder"),
        (tmp_path / "coco", "is not a COCO-style folder"),
    ):
        with pytest.raises(CurationError, match=message):
            plan.check_eval_set(str(eval_set))


def _ok(result: tuple[int, str, str]) -> str:
    """The one result line of a command that succeeded."""
    status, out, err = result
    assert status == 0, err
    return out.strip().splitlines()[-1]


@pytest.mark.slow
def test_download_train_and_evaluate_a_tiny_model(cli, coco_pairs: tuple[list[str], list[str]], tmp_path: Path) -> None:
    """The image-side commands end to end on the COCO val images served locally: a subset downloaded, a tiny
    model trained on it on the CPU (found by the subset's flags, then by --downloaded), evaluated, tabled."""
    urls, texts = coco_pairs
    pq.write_table(pa.table({"url": urls, "text": texts}), tmp_path / "pairs.parquet")
    (tmp_path / "metadata.json").write_text(json.dumps(["a", "man", "woman", "dog", "cat", "table", "street", "with"]))
    pools = tmp_path / "pools.toml"
    pools.write_text('[coco]\nsnapshots = ["CC-MAIN-2023-06"]\n')
    root = tmp_path / "root"
    _ok(
        cli(
            "pairs-import",
            "--root",
            root,
            "--snapshot",
            "CC-MAIN-2023-06",
            "--sources",
            tmp_path / "pairs.parquet",
            "--workers",
            "0",
        )
    )
    meta = _ok(cli("metadata-import", "--root", root, tmp_path / "metadata.json")).split()[1]
    _ok(cli("match", "CC-MAIN-2023-06", "--root", root, "--metadata-version", meta, "--workers", "0"))
    subset = ["--root", root, "--pool", "coco", "--metadata-version", meta, "--t", "1000000000"]
    downloaded = _ok(cli("download", *subset, "--image-size", "64", "--workers", "0", pools=pools)).split()[1]
    samples = ArtifactStore(root).require("downloaded", downloaded).stats["successes"]
    assert 0 < samples <= len(urls)
    line = _ok(cli("train", *subset, "--recipe", "tiny-cpu", pools=pools))
    assert f"(built): metaclip-tiny trained 1 epochs on {samples} samples on cpu (downloaded {downloaded})" in line
    checkpoint = ArtifactStore(root).require("checkpoint", line.split()[1])
    assert checkpoint.input("downloaded").version == downloaded and checkpoint.params["balance_t"] is None
    again = _ok(cli("train", "--root", root, "--downloaded", downloaded, "--recipe", "tiny-cpu"))
    assert again.split()[:3] == ["checkpoint", checkpoint.version, "(cache"]
    line = _ok(cli("evaluate", "--root", root))  # the newest checkpoint, on the shared COCO val images
    assert f"(built): checkpoint {checkpoint.version} (metaclip-tiny): zero-shot top-1 " in line
    metrics = ArtifactStore(root).require("metrics", line.split()[1])
    assert metrics.input("checkpoint").version == checkpoint.version and metrics.stats["images"] == len(urls)
    assert _ok(cli("results", "--root", root)).startswith(f"| {metrics.version} | metaclip-tiny | {samples} | ")


def test_a_reader_that_leaves_early_ends_the_command_quietly(tmp_path: Path) -> None:
    """``metaclip stages | head -1`` where head has gone: no traceback, the shell's status for SIGPIPE."""
    code = "import sys; from metaclip_tasks.cli import main; sys.exit(main())"
    process = subprocess.Popen(
        [sys.executable, "-c", code, "stages"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path
    )
    process.stdout.close()  # the reader leaves before anything is written
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=60) == 141 and stderr == ""
