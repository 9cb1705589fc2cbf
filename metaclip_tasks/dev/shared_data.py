"""Where the project's shared real data lives: ``../shared/data`` beside the repository,
or ``$METACLIP_SHARED_DATA``.  Tests skip and the demo falls back when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

SHARED_DATA = Path(os.environ.get("METACLIP_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))
CAPTIONS = SHARED_DATA / "captions" / "img2dataset_test_10000.parquet"
WIKIPEDIA_SAMPLE = SHARED_DATA / "wikipedia" / "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
COCO = SHARED_DATA / "coco_mini"
WARC = SHARED_DATA / "warc"
