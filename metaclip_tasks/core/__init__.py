"""The pipeline's foundation, known to every other part: the stage record, typed params, versioned artifacts
in an fsspec store, verified files, parquet shards, crawl ids and pools, settings and the one error type."""
