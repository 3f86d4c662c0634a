"""pgvector's `vector` type for asyncpg in its binary form (no pgvector Python package needed).

The wire format is a big-endian uint16 dimension, a uint16 that is always 0, then the floats
as big-endian float32. Vectors inside arrays are passed pre-encoded (`encode_vector`) because
asyncpg would otherwise take a numpy row for a nested array.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import asyncpg
import numpy as np

__all__ = ["decode_vector", "encode_vector", "register_vector"]

_HEADER = struct.Struct(">HH")


def encode_vector(value: np.ndarray | Sequence[float] | bytes) -> bytes:
    if isinstance(value, bytes):
        return value
    array = np.asarray(value, dtype=">f4")
    if array.ndim != 1:
        raise ValueError(f"a vector is one-dimensional, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError("a vector holds NaN or infinity")
    return _HEADER.pack(array.shape[0], 0) + array.tobytes()


def decode_vector(data: bytes) -> np.ndarray:
    dimension, _ = _HEADER.unpack_from(data)
    return np.frombuffer(data, dtype=">f4", count=dimension, offset=_HEADER.size).astype(np.float32)


async def register_vector(conn: asyncpg.Connection) -> None:
    """Teach one connection the `vector` type (a pool's `init`); the extension must exist by then."""
    schema = await conn.fetchval(
        "SELECT n.nspname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace WHERE t.typname = 'vector'"
    )
    if schema is None:
        raise RuntimeError("the pgvector extension is not installed in this database (migration 0010 creates it)")
    await conn.set_type_codec("vector", schema=schema, encoder=encode_vector, decoder=decode_vector, format="binary")
