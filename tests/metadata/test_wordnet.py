"""WordNet, the metadata's first source: the paper's Table 1 figure."""

from __future__ import annotations

from metaclip_tasks.metadata.store import metadata_report


def test_wordnet_gives_table_1s_86654_entries(wordnet: list[str]) -> None:
    assert len(wordnet) == 86_654
    assert wordnet[:3] == ["0", "1", "2"] and wordnet[100] == "entity"
    assert metadata_report(wordnet) == {"entries": 86_654, "distinct": 86_654, "duplicated_entries": 0}
    assert "physical entity" in wordnet and not any("_" in e for e in wordnet)
