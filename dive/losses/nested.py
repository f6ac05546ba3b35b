"""The nested-widths (Matryoshka) loss wrapper and its prefix helpers."""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F

from dive.errors import DiveError


def nested_dims(dim: int, input_dim: int) -> list[int]:
    """``M = [k, 2k, 4k, ...]`` (every ``k * 2^i`` below d) plus d, e.g. (128, 384) -> [128, 256, 384]."""
    dims, width = [], dim
    while width < input_dim:
        dims.append(width)
        width *= 2
    return dims + [input_dim]


def prefix(vectors: torch.Tensor, width: int) -> torch.Tensor:
    """``norm(v[:, :width])``: the Matryoshka output of width ``width``."""
    return F.normalize(vectors[:, :width], dim=1)


class NestedWidthsLoss(torch.nn.Module):
    """``L(y_1, ..., y_n) = sum_{m in M} inner(norm(y_1[:, :m]), ..., norm(y_n[:, :m]))``.

    Matryoshka Representation Learning (Kusupati et al., NeurIPS 2022), in the shape of
    sentence-transformers' ``MatryoshkaLoss``: the inner loss is applied to the prefix-normalised
    outputs at every nested width and the results are summed (unweighted, smallest width first).
    Positional arguments are outputs to cut to each width; keyword arguments (e.g. frozen inputs)
    reach the inner loss unchanged. An inner loss that returns a tuple of terms (e.g.
    :class:`~dive.losses.SimilarityPreservationLoss`) gets each term summed separately.

    Give either ``dim``, the smallest width k (then ``M = nested_dims(k, d)`` for outputs of
    width d, SPEC "Matryoshka-Adaptor"), or the explicit ``widths``.
    """

    def __init__(self, inner: torch.nn.Module, dim: int | None = None, widths: Sequence[int] | None = None):
        super().__init__()
        if (dim is None) == (widths is None):
            raise DiveError("NestedWidthsLoss needs exactly one of dim (the smallest width) and widths")
        self.inner = inner
        self.dim = dim
        self.fixed_widths = list(widths) if widths is not None else None

    def widths(self, full_width: int) -> list[int]:
        """The nested widths ``M`` used for outputs ``full_width`` wide."""
        return self.fixed_widths if self.fixed_widths is not None else nested_dims(self.dim, full_width)

    def forward(self, *outputs: torch.Tensor, **frozen: Any) -> Any:
        total: Any = None
        for width in self.widths(outputs[0].shape[1]):
            value = self.inner(*(prefix(output, width) for output in outputs), **frozen)
            total = _add(_zeros_like(value, outputs[0]) if total is None else total, value)
        return total


def _add(total: Any, value: Any) -> Any:
    if isinstance(value, tuple):
        return type(value)(*(_add(left, right) for left, right in zip(total, value)))
    return total + value


def _zeros_like(value: Any, reference: torch.Tensor) -> Any:
    if isinstance(value, tuple):
        return type(value)(*(_zeros_like(part, reference) for part in value))
    return reference.new_zeros(())
