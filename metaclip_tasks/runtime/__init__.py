"""Where the work runs: the Dask cluster (local or reached by address) and the per-shard map and
gather that every stage uses, inline when there is no cluster."""
