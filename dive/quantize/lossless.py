"""lossless: float32 split into sign / exponent / mantissa byte planes, each compressed with zstd.

Embedding components of unit vectors cluster in a few binary exponents (Xiao, 2026, the
"spherical coordinates" paper cited in SPEC), so the exponent plane entropy-codes well while
sign and mantissa bits are close to random. The codec therefore separates the IEEE 754 fields
of every float32 into five planes and compresses each plane with zstandard:

    sign bits (np.packbits) | exponent byte | mantissa bits 22-16 | 15-8 | 7-0

Decoding rebuilds the exact uint32 words: the round trip is bit-exact (inputs must be
float32). ``bytes_per_vector`` is *measured*: the size of the last ``encode`` output divided
by its number of vectors (header included); there is no assumed ratio. Measured on scifact
with all-MiniLM-L6-v2 (384-d): ~1.2x, close to the ~26.6 bits/value entropy bound of this
layout (1 sign + ~2.6 exponent + 23 mantissa bits); the paper's 1.5x needs its spherical
transform, which this codec does not do.

The codes are one byte blob for the whole matrix (1-D uint8), not one row per vector:
``search`` decodes it and ranks by exact inner product, so results equal float32 search.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from dive.errors import DiveError
from dive.quantize.base import Codec
from dive.search import exact_search

MAGIC = b"DVLZ"
VERSION = 1
HEADER = struct.Struct("<4sBQI5Q")
"""magic, version, n vectors, dim, compressed size of each of the 5 planes."""
N_PLANES = 5


@dataclass(frozen=True)
class LosslessConfig:
    """Lossless float32 coding.

    Attributes:
        level: zstandard compression level (1-22). Default 19, zstd's highest non-"ultra"
            level: on scifact/MiniLM it shrinks the exponent plane ~15% more than level 9 and
            levels 20-22 gained nothing (measured; ~2 s for 5k x 384 on one core).
    """

    level: int = 19


def _planes(words: np.ndarray) -> list[np.ndarray]:
    return [
        np.packbits((words >> 31).astype(np.uint8)),
        ((words >> 23) & 0xFF).astype(np.uint8),
        ((words >> 16) & 0x7F).astype(np.uint8),
        ((words >> 8) & 0xFF).astype(np.uint8),
        (words & 0xFF).astype(np.uint8),
    ]


def _plane_sizes(count: int) -> list[int]:
    return [(count + 7) // 8] + [count] * 4


class Lossless(Codec):
    """Bit-exact float32 compression by IEEE 754 field planes + zstandard (see module docstring)."""

    name = "lossless"
    summary = "bit-exact: float32 sign/exponent/mantissa planes entropy-coded with zstandard"
    reference = "SPEC 'Post-hoc compression'; Xiao, 'Embedding compression via spherical coordinates', 2026"
    Config = LosslessConfig
    exact_float32_input = True

    def __init__(self, config: Any | None = None, **overrides: Any):
        super().__init__(config, **overrides)
        self._measured: float | None = None

    def _check_config(self) -> None:
        level = self.config.level
        if isinstance(level, bool) or not isinstance(level, int) or not 1 <= level <= 22:
            raise DiveError(f"{self.name}: level must be an integer between 1 and 22, got {level!r}")

    @property
    def code_width(self) -> int:
        raise DiveError(f"{self.name}: codes are one compressed blob, not rows")

    @property
    def bytes_per_vector(self) -> float:
        """Measured: bytes of the last ``encode`` output / its number of vectors."""
        self._require_fitted("bytes_per_vector")
        if self._measured is None:
            raise DiveError(f"{self.name}: bytes_per_vector is measured, call encode() first")
        return self._measured

    @property
    def ratio(self) -> float:
        """float32 bytes / compressed bytes of the last ``encode``."""
        return 4 * int(self.dim) / self.bytes_per_vector

    def _fit(self, vectors: np.ndarray) -> None:
        pass

    def _encode(self, vectors: np.ndarray) -> np.ndarray:
        import zstandard

        compressor = zstandard.ZstdCompressor(level=self.config.level)
        frames = [compressor.compress(plane.tobytes()) for plane in _planes(vectors.view(np.uint32))]
        header = HEADER.pack(MAGIC, VERSION, len(vectors), int(self.dim), *map(len, frames))
        blob = np.frombuffer(header + b"".join(frames), dtype=np.uint8).copy()
        self._measured = len(blob) / len(vectors)
        return blob

    def _check_codes(self, codes: np.ndarray) -> np.ndarray:
        if not isinstance(codes, np.ndarray) or codes.dtype != np.uint8 or codes.ndim != 1:
            raise DiveError(f"{self.name}: codes must be the 1-D uint8 blob that encode() returned")
        if len(codes) < HEADER.size:
            raise DiveError(f"{self.name}: codes are truncated (shorter than the header)")
        magic, version, n, dim, *sizes = HEADER.unpack(codes[:HEADER.size].tobytes())
        if magic != MAGIC or version != VERSION:
            raise DiveError(f"{self.name}: codes are not a dive lossless blob (version {VERSION})")
        if dim != self.dim:
            raise DiveError(f"{self.name}: codes hold {dim}-d vectors, the codec is fitted for {self.dim}-d")
        if HEADER.size + sum(sizes) != len(codes):
            raise DiveError(f"{self.name}: codes are {len(codes)} bytes, the header announces "
                            f"{HEADER.size + sum(sizes)} (truncated or altered)")
        return codes

    def n_codes(self, codes: np.ndarray) -> int:
        return int(HEADER.unpack(codes[:HEADER.size].tobytes())[2])

    def _decode(self, codes: np.ndarray) -> np.ndarray:
        import zstandard

        _, _, n, dim, *sizes = HEADER.unpack(codes[:HEADER.size].tobytes())
        decompressor = zstandard.ZstdDecompressor()
        planes, offset = [], HEADER.size
        for size, expected in zip(sizes, _plane_sizes(n * dim)):
            try:
                raw = decompressor.decompress(codes[offset:offset + size].tobytes(), max_output_size=expected)
            except zstandard.ZstdError as error:
                raise DiveError(f"{self.name}: corrupt codes ({error})") from None
            if len(raw) != expected:
                raise DiveError(f"{self.name}: corrupt codes (a plane has {len(raw)} bytes, expected {expected})")
            planes.append(np.frombuffer(raw, dtype=np.uint8))
            offset += size
        sign = np.unpackbits(planes[0], count=n * dim).astype(np.uint32)
        words = ((sign << 31) | (planes[1].astype(np.uint32) << 23) | (planes[2].astype(np.uint32) << 16)
                 | (planes[3].astype(np.uint32) << 8) | planes[4].astype(np.uint32))
        return words.view(np.float32).reshape(n, dim)

    def _search(self, queries: np.ndarray, codes: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return exact_search(queries, self._decode(codes), k)

    def extra(self) -> dict[str, Any]:
        return {"measured_bytes_per_vector": self._measured}

    def load_state(self, state, extra) -> None:
        measured = extra.get("measured_bytes_per_vector")
        if measured is not None and (isinstance(measured, bool) or not isinstance(measured, (int, float)) or measured <= 0):
            raise DiveError(f"{self.name}: saved measured_bytes_per_vector is invalid ({measured!r})")
        self._measured = None if measured is None else float(measured)
