"""PCA (SPEC "Unsupervised and trivial baselines"; DIVE paper Appendix E, Table 9).

Fit: scikit-learn's ``PCA`` on the corpus vectors gives the corpus mean ``mu`` and the top-k
principal axes ``W`` (``[k, d]``, orthonormal rows, from the centred covariance). Transform::

    y = norm(x W^T)            (default, center=False)
    y = norm((x - mu) W^T)     (center=True, scikit-learn's transform)

SPEC says only "project"; by default the projection does not subtract the mean, so at
``k = d`` PCA is a rotation and keeps the frozen inner products (and rankings) exactly, and at
``k < d`` it is the orthogonal projection onto the top-k principal subspace. ``center=True``
gives scikit-learn's centred scores, which also shift every inner product by mean terms.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from sklearn.decomposition import PCA

from dive.data.sets import TrainSet
from dive.errors import DiveError
from dive.methods.base import Citation, LinearLayer, Method, l2_normalize


@dataclass(frozen=True)
class PcaConfig:
    """PCA's settings.

    Defaults: ``dim`` 128 as every method; ``center`` False (see the module docstring: SPEC
    leaves it open, and False keeps the frozen geometry exactly at full dimension).

    Attributes:
        dim: number of principal axes kept (target dimension k).
        center: subtract the corpus mean before projecting.
    """

    dim: int = 128
    center: bool = False

    def __post_init__(self) -> None:
        if self.dim < 1:
            raise DiveError("dim must be positive")


def principal_axes(doc_vectors: np.ndarray, dim: int, who: str = "pca") -> tuple[np.ndarray, np.ndarray]:
    """The corpus's top-``dim`` principal axes ``[dim, d]`` (orthonormal rows) and its mean ``[d]``, float32;
    ``who`` (the method) names the refusal when the corpus has fewer vectors than ``dim``."""
    if len(doc_vectors) < dim:
        raise DiveError(f"{who}: {dim} principal components need at least as many corpus vectors, "
                        f"got {len(doc_vectors)}")
    pca = PCA(n_components=dim, random_state=0).fit(doc_vectors)
    return pca.components_.astype(np.float32), pca.mean_.astype(np.float32)


class Pca(Method):
    name = "pca"
    summary = "project onto the corpus's top-k principal axes and re-normalise"
    citation = Citation("Principal component analysis: a review and recent developments", "Jolliffe & Cadima",
                        "Phil. Trans. R. Soc. A 2016", "a baseline of the DIVE paper, App. E")
    Config = PcaConfig
    supervised = False

    components: torch.Tensor
    mean: torch.Tensor

    def _fit(self, train_set: TrainSet) -> None:
        components, mean = principal_axes(train_set.doc_vectors, self.output_dim, self.name)
        self.components, self.mean = torch.from_numpy(components), torch.from_numpy(mean)

    def _transform(self, vectors: np.ndarray) -> np.ndarray:
        if self.config.center:
            vectors = vectors - self.mean.numpy()
        return l2_normalize(vectors @ self.components.numpy().T)

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"components": self.components, "mean": self.mean}

    def linear_layers(self) -> list[LinearLayer]:
        bias = -(self.components @ self.mean) if self.config.center else torch.zeros(self.output_dim)
        return [(self.components, bias, False)]

    def load_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        components, mean = tensors.get("components"), tensors.get("mean")
        if (components is None or mean is None or components.shape != (self.output_dim, self.input_dim)
                or mean.shape != (self.input_dim,)):
            raise DiveError("pca: saved weights do not fit the saved config")
        self.components, self.mean = components.float(), mean.float()
