"""Pair uids: sha224 of URLs by OpenSSL's libcrypto, compiled (metaclip_tasks/ingest/_uids.c)."""

from typing import Final, TypeAlias

import numpy as np
from _typeshed import ReadableBuffer

# numpy's stubs give ndarray the buffer protocol from Python 3.12 only
_Buffer: TypeAlias = ReadableBuffer | np.ndarray

HEX_DIGITS: Final[int]

def sha224_hex24(data: _Buffer, offsets: _Buffer, /) -> bytes:
    """The first HEX_DIGITS hex digits of sha224 of each URL (int64 offsets into data), back to back."""
