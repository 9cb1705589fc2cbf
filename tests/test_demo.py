"""The README's main job: the demo on embedded defaults, and that re-running it is idempotent."""

from __future__ import annotations

from pathlib import Path

from metaclip_tasks.demo import generated_pool, run_demo


def test_demo_on_real_captions_is_idempotent(tmp_path: Path, captions_table, wordnet) -> None:
    report = run_demo(tmp_path, progress=False)
    assert "real captions" in report and "10,000 pairs" in report
    files = {p.relative_to(tmp_path): p.read_bytes() for p in sorted(tmp_path.rglob("*.parquet"))}
    assert len(files) == 12
    run_demo(tmp_path, progress=False)
    again = {p.relative_to(tmp_path): p.read_bytes() for p in sorted(tmp_path.rglob("*.parquet"))}
    assert again == files
    assert (tmp_path / "report.json").is_file()


def test_demo_generates_a_pool_without_shared_data(tmp_path: Path, wordnet) -> None:
    report = run_demo(tmp_path, captions=tmp_path / "absent.parquet", progress=False)
    assert "generated pool" in report
    assert generated_pool(wordnet[:500], 50).equals(generated_pool(wordnet[:500], 50))
