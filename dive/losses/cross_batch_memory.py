"""Cross-batch memory (XBM) as a loss wrapper, and its FIFO ring buffer."""

from __future__ import annotations

from typing import Callable

import torch

DUPLICATE_SIMILARITY = 1 - 1e-6
"""Memory entries at least this similar to an anchor are copies of it and are not neighbours."""


class Memory:
    """A FIFO ring buffer of the last ``size`` frozen vectors (no gradient)."""

    def __init__(self, size: int):
        self.size = size
        self.vectors: torch.Tensor | None = None
        self.count = self.pointer = 0

    def contents(self) -> torch.Tensor | None:
        return None if self.vectors is None or self.count == 0 else self.vectors[:self.count]

    def state(self) -> dict[str, torch.Tensor]:
        """For training checkpoints: the buffer and its (count, pointer)."""
        if self.vectors is None:
            return {}
        return {"memory": self.vectors, "memory_position": torch.tensor([self.count, self.pointer])}

    def restore(self, state: dict[str, torch.Tensor]) -> None:
        if "memory" in state:
            self.vectors = state["memory"]
            self.count, self.pointer = (int(value) for value in state["memory_position"])

    @torch.no_grad()
    def add(self, vectors: torch.Tensor) -> None:
        vectors = vectors[-self.size:].detach()
        if self.vectors is None:
            self.vectors = vectors.new_zeros(self.size, vectors.shape[1])
        slots = (self.pointer + torch.arange(len(vectors), device=vectors.device)) % self.size
        self.vectors[slots] = vectors
        self.pointer = (self.pointer + len(vectors)) % self.size
        self.count = min(self.count + len(vectors), self.size)


class CrossBatchMemoryLoss(torch.nn.Module):
    """An inner pair loss between each anchor and its nearest entries of a memory of past batches.

    Cross-batch memory (Wang et al., "Cross-Batch Memory for Embedding Learning", CVPR 2020), in
    the shape of pytorch-metric-learning's ``CrossBatchMemory`` wrapper, as SMEC's selectable
    variant S-XBM uses it (Zhang et al., EMNLP 2025; SPEC "SMEC"). The memory holds *frozen*
    vectors, which never go stale; each call:

    1. picks, for each frozen anchor ``a``, the ``neighbours`` memory entries ``b`` with the
       highest frozen similarity ``s(a, b) = <a, b>``, skipping copies of ``a``
       (``s > 1 - 1e-6``);
    2. encodes them with the caller's current model, ``y_b = encode(b)``;
    3. returns ``inner(y_a, y_b, s(a, b), valid)`` (:class:`~dive.losses.NeighbourSimilarityLoss`
       gives S-XBM's ``mean |s_w(a, b) - s(a, b)|``), zero while the memory is empty;
    4. then enqueues ``enqueue`` (default: the anchors), dropping the oldest entries.

    The wrapper owns the memory; :meth:`state` / :meth:`restore` carry it through checkpoints.
    """

    def __init__(self, inner: torch.nn.Module, memory_size: int, neighbours: int):
        super().__init__()
        self.inner = inner
        self.neighbours = neighbours
        self.memory = Memory(memory_size)

    def forward(self, frozen: torch.Tensor, reduced: torch.Tensor, encode: Callable[[torch.Tensor], torch.Tensor],
                enqueue: torch.Tensor | None = None) -> torch.Tensor:
        loss = self.against_memory(frozen, reduced, encode)
        self.memory.add(frozen if enqueue is None else enqueue)
        return loss

    def against_memory(self, frozen: torch.Tensor, reduced: torch.Tensor,
                        encode: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """Steps 1-3 alone: the loss against the memory as it is, nothing enqueued."""
        memory = self.memory.contents()
        if memory is None:
            return reduced.new_zeros(())
        similarity = frozen @ memory.T
        similarity = similarity.masked_fill(similarity > DUPLICATE_SIMILARITY, float("-inf"))
        top_similarity, top = similarity.topk(min(self.neighbours, len(memory)), dim=1)
        valid = torch.isfinite(top_similarity)
        batch, n_top = top.shape
        neighbours = encode(memory[top.reshape(-1)]).view(batch, n_top, -1)
        return self.inner(reduced, neighbours, top_similarity, valid)

    def reset(self) -> None:
        """Empty the memory (a new training run)."""
        self.memory = Memory(self.memory.size)

    def state(self) -> dict[str, torch.Tensor]:
        """The memory, as tensors for a training checkpoint."""
        return self.memory.state()

    def restore(self, state: dict[str, torch.Tensor]) -> None:
        """Reload :meth:`state`'s output."""
        self.memory.restore(state)
