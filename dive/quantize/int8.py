"""int8: scalar quantisation, one byte per dimension, ranges calibrated per dimension on the corpus."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np

from dive.errors import DiveError
from dive.quantize.base import Codec, require_state

LEVELS = 255
"""uint8 codes 0..255: 256 levels, 255 steps between a dimension's min and max."""


@dataclass(frozen=True)
class Int8Config:
    """int8 scalar quantisation.

    Attributes:
        calibration_quantile: each dimension's range is ``[q, 1 - q]`` quantiles of the corpus
            values; values outside are clipped. Default 0.0 = the exact per-dimension min/max,
            as SPEC "Post-hoc compression" states ("per-dimension ranges calibrated on the
            corpus"), so every corpus value is representable.
    """

    calibration_quantile: float = 0.0


class Int8(Codec):
    """Per-dimension affine uint8 codes; asymmetric search (float query x decoded documents).

    ``code = round((x - low) / step)`` with ``step = (high - low) / 255`` per dimension, decoded
    as ``low + code * step`` (error at most ``step / 2`` inside the calibrated range). A
    constant dimension (high == low) decodes exactly to its value.
    """

    name = "int8"
    summary = "per-dimension min/max scalar quantisation to uint8"
    reference = "SPEC 'Post-hoc compression'; Jacob et al., CVPR 2018 (affine uint8 quantisation)"
    Config = Int8Config

    def _check_config(self) -> None:
        quantile = self.config.calibration_quantile
        if isinstance(quantile, bool) or not isinstance(quantile, (int, float)) or not 0.0 <= quantile < 0.5:
            raise DiveError(f"{self.name}: calibration_quantile must be in [0, 0.5), got {quantile!r}")

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

    def _encode(self, vectors: np.ndarray) -> np.ndarray:
        scaled = np.rint((vectors - self.low) / self.step)
        return np.clip(scaled, 0, LEVELS).astype(np.uint8)

    def _decode(self, codes: np.ndarray) -> np.ndarray:
        return (self.low + codes.astype(np.float32) * self.step).astype(np.float32)

    def faiss_index(self, codes: np.ndarray) -> Any:
        """faiss ``IndexScalarQuantizer`` ``QT_8bit``, whose decode ``vmin + (c + 0.5) / 255 * vdiff``
        equals ``low + c * step`` with ``vmin = low - step / 2`` and ``vdiff = 255 * step``."""
        index = faiss.IndexScalarQuantizer(self.dim, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT)
        trained = np.concatenate([self.low - self.step / 2, self.step * LEVELS]).astype(np.float32)
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
