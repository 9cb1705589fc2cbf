"""The token engine of matching, compiled (metaclip_tasks/curation/_match.c)."""

from typing import Any, Final, TypeAlias

import numpy as np
from _typeshed import ReadableBuffer

# numpy's stubs give ndarray the buffer protocol from Python 3.12 only
_Buffer: TypeAlias = ReadableBuffer | np.ndarray

TABLES: Final[tuple[str, ...]]
INLINE: Final[int]
INFO_MORE: Final[int]
INFO_ONE: Final[int]
INFO_SHIFT: Final[int]
PUNCTS_TO_WRAP: Final[str]
CHARS_TO_SPACE: Final[str]

def match_list(tables: tuple[_Buffer, ...], texts: list[Any], /) -> tuple[bytes, bytes]:
    """Matches of a list of texts: (int64 offsets, int32 entry ids) as bytes."""

def match_arrow(
    tables: tuple[_Buffer, ...],
    offsets: _Buffer,
    offset_bytes: int,
    data: _Buffer,
    validity: _Buffer | None,
    first: int,
    n: int,
    /,
) -> tuple[bytes, bytes]:
    """Matches of an arrow string array's texts: (int64 offsets, int32 entry ids) as bytes."""

def token_hashes(offsets: _Buffer, data: _Buffer, /) -> bytes:
    """The uint64 hash of each token of an int64-offsets byte column."""

def table(keys: _Buffer, rows: _Buffer, width: int, /) -> bytes:
    """The open-addressing table (int64[S, width + 1]) of uint64 keys and their int64 rows."""

def to_lists(offsets: _Buffer, ids: _Buffer, ints: list[int | None], /) -> list[list[int]]:
    """int64 offsets and int32 ids as a list of lists of ints (reusing the ints of ``ints``)."""
