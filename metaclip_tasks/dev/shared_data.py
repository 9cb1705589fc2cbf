"""The project's shared real data (``settings.shared_data_dir``): tests skip and the demo falls back when it is absent."""

from __future__ import annotations

from metaclip_tasks.core.settings import shared_coco, shared_data_dir

SHARED_DATA = shared_data_dir()
CAPTIONS = SHARED_DATA / "captions" / "img2dataset_test_10000.parquet"
WIKIPEDIA_SAMPLE = SHARED_DATA / "wikipedia" / "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
COCO = shared_coco()
WARC = SHARED_DATA / "warc"
