"""int8: scalar quantisation, one byte per dimension, ranges calibrated per dimension on the corpus.

The ranges are sentence-transformers' layout: :attr:`Int8.ranges` is the ``[2, dim]`` float32
array ``[minimums; maximums]`` that ``quantize_embeddings(..., ranges=...)`` takes, and
:meth:`Int8.from_ranges` builds a fitted codec from such an array. With ``rounding="floor"`` the
codes are sentence-transformers' (``clip(floor((x - min) / step), 0, 255)``, step
``(max - min) / 255``, a zero step taken as 1): its ``precision="uint8"`` codes exactly, and its
``precision="int8"`` codes minus 128 (:func:`as_signed`). Queries then encoded by
sentence-transformers with those ranges land on the same codes as dive's documents, where
``encode(precision=...)`` without ranges recalibrates on every batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np

from dive.errors import DiveError
from dive.quantize.base import Codec, require_state

LEVELS = 255
"""uint8 codes 0..255: 256 levels, 255 steps between a dimension's min and max."""
ROUNDINGS = ("nearest", "floor")
SIGNED_OFFSET = 128
"""sentence-transformers' ``precision="int8"`` code = its ``uint8`` code - 128."""
RANGES_ROWS = 2
"""A ranges array is ``[2, dim]``: row 0 the minimums, row 1 the maximums (sentence-transformers' layout)."""


@dataclass(frozen=True)
class Int8Config:
    """int8 scalar quantisation.

    Attributes:
        calibration_quantile: each dimension's range is ``[q, 1 - q]`` quantiles of the corpus
            values; values outside are clipped. Default 0.0 = the exact per-dimension min/max,
            as SPEC "Post-hoc compression" states ("per-dimension ranges calibrated on the
            corpus"), so every corpus value is representable; sentence-transformers calibrates
            the same way.
        rounding: ``"nearest"`` (``rint``, error at most half a step; decoded at the level) or
            ``"floor"`` (sentence-transformers' ``quantize_embeddings`` rounding; decoded at the
            middle of the step, as faiss' ``QT_8bit``). Default ``"nearest"``: what every dive
            record before this setting used (a saved codec without it loads as nearest).
    """

    calibration_quantile: float = 0.0
    rounding: str = "nearest"


class Int8(Codec):
    """Per-dimension affine uint8 codes; asymmetric search (float query x decoded documents).

    ``code = round((x - low) / step)`` with ``step = (high - low) / 255`` per dimension, decoded
    as ``low + code * step`` (error at most ``step / 2`` inside the calibrated range). A
    constant dimension (high == low) decodes exactly to its value. With ``rounding="floor"``:
    ``code = floor(...)``, decoded as ``low + (code + 0.5) * step``.
    """

    name = "int8"
    summary = "per-dimension min/max scalar quantisation to uint8"
    reference = "SPEC 'Post-hoc compression'; Jacob et al., CVPR 2018 (affine uint8 quantisation)"
    Config = Int8Config

    def _check_config(self) -> None:
        quantile = self.config.calibration_quantile
        if isinstance(quantile, bool) or not isinstance(quantile, (int, float)) or not 0.0 <= quantile < 0.5:
            raise DiveError(f"{self.name}: calibration_quantile must be in [0, 0.5), got {quantile!r}")
        if self.config.rounding not in ROUNDINGS:
            raise DiveError(f"{self.name}: rounding must be one of {', '.join(ROUNDINGS)}, "
                            f"got {self.config.rounding!r}")

    @classmethod
    def from_ranges(cls, ranges: np.ndarray, **settings: Any) -> "Int8":
        """A fitted codec from sentence-transformers' ``[2, dim]`` ranges (minimums; maximums).

        ``settings`` are :class:`Int8Config` fields (``rounding="floor"`` for sentence-transformers'
        codes). Ranges that are not finite, or with a maximum below its minimum, are refused.
        """
        codec = cls(**settings)
        array = np.asarray(ranges)
        if array.ndim != 2 or array.shape[0] != RANGES_ROWS or array.shape[1] < 1 or array.dtype.kind not in "fiu":
            raise DiveError(f"{codec.name}: ranges must be a [2, dim] array of numbers (minimums; maximums), "
                            f"got {array.dtype}{list(array.shape)}")
        low, high = array.astype(np.float32)
        if not (np.isfinite(low).all() and np.isfinite(high).all() and (high >= low).all()):
            raise DiveError(f"{codec.name}: ranges must be finite with every maximum >= its minimum")
        codec.dim = int(array.shape[1])
        codec._set_range(low, high)
        return codec

    @property
    def ranges(self) -> np.ndarray:
        """``[2, dim]`` float32 ``[minimums; maximums]``: ``quantize_embeddings(..., ranges=codec.ranges)``."""
        self._require_fitted("ranges")
        return np.stack([self.low, self.high]).astype(np.float32)

    def _fit(self, vectors: np.ndarray) -> None:
        quantile = float(self.config.calibration_quantile)
        if quantile > 0:
            low, high = np.quantile(vectors, [quantile, 1.0 - quantile], axis=0)
        else:
            low, high = vectors.min(axis=0), vectors.max(axis=0)
        self._set_range(low.astype(np.float32), high.astype(np.float32))

    def _set_range(self, low: np.ndarray, high: np.ndarray) -> None:
        self.low = low
        self.high = high
        step = ((high - low) / LEVELS).astype(np.float32)
        # A constant dimension, or one so narrow that its step underflows float32, keeps step 1:
        # every value then codes to 0 and decodes to ``low``.
        self.step = np.where(np.isfinite(step) & (step > 0), step, np.float32(1.0))

    @property
    def _level_offset(self) -> float:
        """Where in its step a code decodes: 0 (the level, nearest rounding) or 0.5 (the middle, floor)."""
        return 0.5 if self.config.rounding == "floor" else 0.0

    def _encode(self, vectors: np.ndarray) -> np.ndarray:
        scaled = (vectors - self.low) / self.step
        rounded = np.floor(scaled) if self.config.rounding == "floor" else np.rint(scaled)
        return np.clip(rounded, 0, LEVELS).astype(np.uint8)

    def _decode(self, codes: np.ndarray) -> np.ndarray:
        return (self.low + (codes.astype(np.float32) + np.float32(self._level_offset)) * self.step).astype(np.float32)

    def faiss_index(self, codes: np.ndarray) -> Any:
        """faiss ``IndexScalarQuantizer`` ``QT_8bit``, whose decode ``vmin + (c + 0.5) / 255 * vdiff``
        equals :meth:`decode` with ``vdiff = 255 * step`` and ``vmin = low - step / 2`` (nearest) or
        ``low`` (floor)."""
        index = faiss.IndexScalarQuantizer(self.dim, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT)
        vmin = self.low - self.step * np.float32(0.5 - self._level_offset)
        trained = np.concatenate([vmin, self.step * LEVELS]).astype(np.float32)
        faiss.copy_array_to_vector(trained, index.sq.trained)
        index.is_trained = True
        index.add_sa_codes(self._check_codes(codes))
        return index

    def state(self) -> dict[str, np.ndarray]:
        return {"low": self.low, "high": self.high}

    def load_state(self, state, extra) -> None:
        low = require_state(self, state, "low", (self.dim,))
        high = require_state(self, state, "high", (self.dim,))
        if not (np.isfinite(low).all() and np.isfinite(high).all() and (high >= low).all()):
            raise DiveError(f"{self.name}: saved ranges are not finite with high >= low")
        self._set_range(low, high)


def as_signed(codes: np.ndarray) -> np.ndarray:
    """dive's uint8 codes as sentence-transformers' ``precision="int8"`` codes (each minus 128)."""
    return (codes.astype(np.int16) - SIGNED_OFFSET).astype(np.int8)
