"""Parquet shards of pairs on any fsspec storage, read and written with errors that name the shard."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Self

import pyarrow as pa
import pyarrow.parquet as pq

from metaclip_tasks.core import files
from metaclip_tasks.core.errors import CurationError

PAIRS_SCHEMA = pa.schema(
    [
        ("uid", pa.string()),
        ("url", pa.string()),
        ("text", pa.string()),
        ("page_url", pa.string()),
        ("lang", pa.string()),
        ("title", pa.string()),
    ]
)
MATCHED_SCHEMA = pa.schema(
    [("uid", pa.string()), ("url", pa.string()), ("text", pa.string()), ("matched_entry_ids", pa.list_(pa.int32()))]
)
_STRINGS = (pa.string(), pa.large_string())


class ShardReader:
    """One parquet shard, opened and checked for the columns a stage needs (and their types)."""

    def __init__(self, source: str | files.Stored, columns: Sequence[str], string_columns: Sequence[str] = ()) -> None:
        self.uri = uri = files.location(source)
        self.columns = list(columns)
        self._handle = files.open_read(source, "input shard")  # an artifact's shard is verified first
        try:
            self.file = pq.ParquetFile(self._handle)
        except (pa.ArrowException, OSError) as e:
            self._handle.close()
            raise CurationError(f"input shard {uri} is not a readable parquet file: {e}") from e
        schema = self.file.schema_arrow
        missing = [c for c in self.columns if c not in schema.names]
        if missing:
            self.close()
            raise CurationError(
                f"input shard {uri} has no column {', '.join(map(repr, missing))} (its columns: {', '.join(schema.names)})"
            )
        for name in string_columns:
            if name and schema.field(name).type not in _STRINGS:
                self.close()
                raise CurationError(f"input shard {uri}: column {name!r} is {schema.field(name).type}, not string")

    def require_int_lists(self, name: str) -> None:
        """Column ``name`` must hold lists of integers (entry ids), else an error naming it and its type."""
        kind = self.file.schema_arrow.field(name).type
        if not (pa.types.is_list(kind) or pa.types.is_large_list(kind)) or not pa.types.is_integer(kind.value_type):
            self.close()
            raise CurationError(f"input shard {self.uri}: column {name!r} is {kind}, not a list of integer entry ids")

    @property
    def num_rows(self) -> int:
        return self.file.metadata.num_rows

    def batches(self, batch_rows: int = 65536) -> Iterator[pa.RecordBatch]:
        """The shard's rows, ``batch_rows`` at a time; a corrupt page is an error naming the shard."""
        try:
            yield from self.file.iter_batches(batch_size=batch_rows, columns=self.columns)
        except (pa.ArrowException, OSError) as e:
            raise CurationError(f"input shard {self.uri} is corrupt: {e}") from e

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ShardWriter:
    """A parquet shard written to ``uri`` (zstd), described as it is written; as a context manager,
    closed on success and removed on an error (no half-written shard is left, and no writer is left
    to flush into the file later)."""

    def __init__(self, uri: str, schema: pa.Schema) -> None:
        self.schema = schema
        self._out = files.HashingWriter(uri)
        self._writer = pq.ParquetWriter(self._out, schema, compression="zstd")

    def write(self, table: pa.Table | pa.RecordBatch) -> None:
        if isinstance(table, pa.RecordBatch):
            table = pa.Table.from_batches([table])
        self._writer.write_table(table.cast(self.schema))

    def close(self) -> files.Stored:
        self._writer.close()
        self._out.close()
        return self._out.stored

    def abort(self) -> None:
        """Stop writing and remove what was written."""
        try:
            self._writer.close()
        finally:
            self._out.close()
            fs, path = files.filesystem(self._out.uri)
            if fs.exists(path):
                fs.rm(path)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, *exc: object) -> None:
        if kind is not None:
            self.abort()


def part_name(index: int) -> str:
    """The name of the ``index``-th parquet part of an artifact's rows."""
    return f"part-{index:05d}.parquet"
