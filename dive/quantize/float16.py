"""float16: every component rounded to IEEE half precision (2 bytes per dimension)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np

from dive.errors import DiveError
from dive.quantize.base import Codec

FLOAT16_MAX = float(np.finfo(np.float16).max)


@dataclass(frozen=True)
class Float16Config:
    """float16 has no settings: rounding is IEEE 754 round-to-nearest-even (numpy ``astype``)."""


class Float16(Codec):
    """Half-precision storage; search is the float query against the decoded (float32) documents.

    Nothing is learned: ``fit`` only records the dimension. Values beyond float16's range
    (|x| > 65504) raise instead of silently becoming inf.
    """

    name = "float16"
    summary = "IEEE half precision, 2 bytes per dimension"
    reference = "IEEE 754-2008 binary16"
    Config = Float16Config
    code_dtype = np.float16

    def _fit(self, vectors: np.ndarray) -> None:
        pass

    def faiss_index(self, codes: np.ndarray) -> Any:
        """faiss ``IndexScalarQuantizer`` ``QT_fp16`` (the same IEEE half codes, little-endian)."""
        index = faiss.IndexScalarQuantizer(self.dim, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
        index.add_sa_codes(np.ascontiguousarray(self._check_codes(codes).astype("<f2")).view(np.uint8))
        return index

    def _encode(self, vectors: np.ndarray) -> np.ndarray:
        too_big = np.abs(vectors) > FLOAT16_MAX
        if too_big.any():
            row = int(np.argmax(too_big.any(axis=1)))
            raise DiveError(f"{self.name}: row {row} has a value beyond float16's range (|x| > {FLOAT16_MAX:g})")
        return vectors.astype(np.float16)

    def _decode(self, codes: np.ndarray) -> np.ndarray:
        return codes.astype(np.float32)
