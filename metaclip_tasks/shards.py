"""Reading and writing parquet shards of pairs, with errors that name the shard and column."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from metaclip_tasks.errors import CurationError
from metaclip_tasks.storage import atomic_file

MATCHED_SCHEMA = pa.schema(
    [
        ("uid", pa.string()),
        ("url", pa.string()),
        ("text", pa.string()),
        ("matched_entry_ids", pa.list_(pa.int32())),
    ]
)


class ShardReader:
    """One parquet shard of pairs, opened and checked for the columns a stage needs."""

    def __init__(self, path: str | os.PathLike, columns: Sequence[str]) -> None:
        self.path = Path(path)
        self.columns = list(columns)
        if not self.path.is_file():
            raise CurationError(f"input shard {self.path} does not exist")
        try:
            self.file = pq.ParquetFile(self.path)
        except (pa.ArrowException, OSError) as e:
            raise CurationError(f"input shard {self.path} is not a readable parquet file: {e}") from e
        names = self.file.schema_arrow.names
        missing = [c for c in self.columns if c not in names]
        if missing:
            raise CurationError(
                f"input shard {self.path} has no column {', '.join(map(repr, missing))} "
                f"(its columns: {', '.join(names)})"
            )

    @property
    def num_rows(self) -> int:
        return self.file.metadata.num_rows

    def batches(self, batch_rows: int = 65536) -> Iterator[pa.RecordBatch]:
        """The shard's rows, ``batch_rows`` at a time; a corrupt page is an error naming the shard."""
        try:
            yield from self.file.iter_batches(batch_size=batch_rows, columns=self.columns)
        except (pa.ArrowException, OSError) as e:
            raise CurationError(f"input shard {self.path} is corrupt: {e}") from e


@contextmanager
def shard_writer(path: str | os.PathLike, schema: pa.Schema) -> Iterator[pq.ParquetWriter]:
    """A parquet writer whose file appears at ``path`` only once it is complete."""
    with atomic_file(path) as tmp:
        writer = pq.ParquetWriter(tmp, schema, compression="zstd")
        try:
            yield writer
        finally:
            writer.close()


def expand_inputs(paths: Sequence[str | os.PathLike], pattern: str = "*.parquet") -> list[Path]:
    """Input files, a directory standing for its files matching ``pattern`` (sorted by name)."""
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(p for p in path.glob(pattern) if not p.name.startswith("."))
            if not found:
                raise CurationError(f"input directory {path} holds no {pattern} file")
            files.extend(found)
        elif not path.exists():
            raise CurationError(f"input {path} does not exist")
        else:
            files.append(path)
    if not files:
        raise CurationError("no input files given")
    stems = [f.stem for f in files]
    clash = next((s for s in stems if stems.count(s) > 1), None)
    if clash is not None:
        raise CurationError(f"two inputs are named {clash!r}: their outputs would collide")
    return files


def progress_bar(total: int, description: str, enabled: bool):
    """A tqdm bar over rows (shown on terminals only)."""
    from tqdm import tqdm

    return tqdm(total=total, desc=description, unit="pairs", unit_scale=True, disable=None if enabled else True)
