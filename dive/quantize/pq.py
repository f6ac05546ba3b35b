"""pq: product quantisation (faiss ``IndexPQ``), ``m`` sub-vectors of ``nbits`` bits each.

Each vector is cut into ``m`` sub-vectors of ``dim / m`` components; each sub-vector is
replaced by the index of its nearest centroid in a per-sub-space codebook of ``2**nbits``
centroids learned by k-means on the corpus. Search is asymmetric (ADC): the float query's
inner product with every centroid is tabulated once, then summed along each code.
The codebooks are saved as one float32 tensor ``[m, 2**nbits, dim / m]`` (no faiss pickle).
"""

from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np

from dive.errors import DiveError
from dive.quantize.base import Codec, require_state

MAX_NBITS = 16
"""faiss's ProductQuantizer stores codes of up to 16 bits per sub-vector efficiently."""


@dataclass(frozen=True)
class PQConfig:
    """Product quantisation.

    Attributes:
        m: number of sub-vectors (must divide the dimension). Default 16: faiss's ``PQ16``
            factory example, 16 bytes per vector at 8 bits (Jegou et al., TPAMI 2011 use m=8/16).
        nbits: bits per sub-vector code, ``2**nbits`` centroids per codebook. Default 8: faiss's
            standard (one byte per sub-vector, fastest ADC tables) and Jegou et al.'s k*=256.
        seed: seed of faiss's k-means (initial centroids and corpus subsampling), so fitting is
            repeatable. Default 0, as every dive seed.
        niter: k-means iterations. Default 25: faiss ``ClusteringParameters``' default.
    """

    m: int = 16
    nbits: int = 8
    seed: int = 0
    niter: int = 25


class PQ(Codec):
    """faiss product quantiser with inner-product ADC search."""

    name = "pq"
    summary = "product quantisation: m sub-vectors x nbits (faiss IndexPQ), asymmetric search"
    reference = "Jegou, Douze & Schmid, 'Product quantization for nearest neighbor search', TPAMI 2011; faiss"
    Config = PQConfig

    def _check_config(self) -> None:
        for setting, low, high in (("m", 1, None), ("nbits", 1, MAX_NBITS), ("niter", 1, None), ("seed", 0, None)):
            value = getattr(self.config, setting)
            if isinstance(value, bool) or not isinstance(value, int) or value < low or (high and value > high):
                bounds = f"between {low} and {high}" if high else f">= {low}"
                raise DiveError(f"{self.name}: {setting} must be an integer {bounds}, got {value!r}")

    def _check_dim(self, dim: int, n_rows: int | None) -> None:
        m, nbits = self.config.m, self.config.nbits
        if dim % m:
            divisors = [value for value in range(1, dim + 1) if dim % value == 0]
            raise DiveError(f"{self.name}: m={m} sub-vectors does not divide the dimension {dim} "
                            f"(choose one of {', '.join(map(str, divisors))})")
        if n_rows is not None and n_rows < 2 ** nbits:
            raise DiveError(f"{self.name}: {n_rows} corpus vectors are too few to train {2 ** nbits} centroids "
                            f"per sub-vector (nbits={nbits}); lower nbits or fit on more vectors")

    @property
    def ksub(self) -> int:
        return 2 ** self.config.nbits

    @property
    def code_width(self) -> int:
        return (self.config.m * self.config.nbits + 7) // 8

    def _new_index(self, dim: int) -> faiss.IndexPQ:
        return faiss.IndexPQ(dim, self.config.m, self.config.nbits, faiss.METRIC_INNER_PRODUCT)

    def _fit(self, vectors: np.ndarray) -> None:
        index = self._new_index(vectors.shape[1])
        index.pq.cp.seed = self.config.seed
        index.pq.cp.niter = self.config.niter
        index.train(vectors)
        self.index = index

    def _encode(self, vectors: np.ndarray) -> np.ndarray:
        return self.index.sa_encode(vectors)

    def _decode(self, codes: np.ndarray) -> np.ndarray:
        return self.index.sa_decode(codes).astype(np.float32, copy=False)

    def _search(self, queries: np.ndarray, codes: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self.faiss_index(codes).search(queries, k)

    def faiss_index(self, codes: np.ndarray) -> faiss.IndexPQ:
        """The trained ``IndexPQ`` holding ``codes`` (asymmetric inner-product search)."""
        index = faiss.clone_index(self.index)  # trained codebooks, no stored codes
        index.reset()
        index.add_sa_codes(self._check_codes(codes))
        return index

    @property
    def centroids(self) -> np.ndarray:
        """Codebooks, ``[m, 2**nbits, dim / m]`` float32."""
        return faiss.vector_to_array(self.index.pq.centroids).reshape(self.config.m, self.ksub, -1)

    def state(self) -> dict[str, np.ndarray]:
        return {"centroids": self.centroids}

    def load_state(self, state, extra) -> None:
        centroids = require_state(self, state, "centroids", (self.config.m, self.ksub, self.dim // self.config.m))
        if not np.isfinite(centroids).all():
            raise DiveError(f"{self.name}: saved centroids are not finite")
        index = self._new_index(self.dim)
        faiss.copy_array_to_vector(np.ascontiguousarray(centroids).ravel(), index.pq.centroids)
        index.is_trained = True
        self.index = index
