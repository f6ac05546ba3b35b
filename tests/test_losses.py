import math

import pytest
import torch
import torch.nn.functional as F

from dive.errors import DiveError
from dive.losses import (CrossBatchMemoryLoss, HeadwiseNTXentLoss, NeighbourSimilarityLoss, NestedWidthsLoss,
                         ReconstructionLoss, SelfLimitingTripletLoss, SimilarityPreservationLoss, SoftplusRankingLoss,
                         nested_dims, prefix, softplus_ranking_loss)


def unit(*rows):
    return F.normalize(torch.tensor(rows, dtype=torch.float32), dim=1)


def test_triplet_loss_is_exactly_zero_with_zero_gradient_when_every_margin_holds():
    query = unit([1.0, 0.0], [0.0, 1.0]).requires_grad_()
    positive = unit([1.0, 0.0], [0.0, 1.0]).requires_grad_()
    negative = unit([-1.0, 0.0], [0.0, -1.0]).requires_grad_()  # s(q,p) - s(q,n) = 2 > m
    loss_fn = SelfLimitingTripletLoss(margin=1.0)
    loss = loss_fn(query, positive, negative)
    loss.backward()
    assert loss.item() == 0.0
    for tensor in (query, positive, negative):
        assert torch.count_nonzero(tensor.grad) == 0
    assert not loss_fn.active(query, positive, negative).any()


def test_triplet_loss_averages_over_all_triplets_and_only_violators_get_gradient():
    query = unit([1.0, 0.0], [1.0, 0.0]).requires_grad_()
    positive = unit([1.0, 0.0], [0.0, 1.0])
    negative = unit([-1.0, 0.0], [1.0, 0.0])
    # triplet 0: 1 - (-1) = 2 >= 0.5 (inactive); triplet 1: 0 - 1 = -1 < 0.5 -> loss 1.5
    loss = SelfLimitingTripletLoss(margin=0.5)(query, positive, negative)
    assert loss.item() == pytest.approx(1.5 / 2)  # mean over ALL triplets, not only the active one
    loss.backward()
    assert torch.count_nonzero(query.grad[0]) == 0
    assert torch.count_nonzero(query.grad[1]) > 0


def ntxent_by_hand(heads: torch.Tensor, tau: float) -> float:
    batch, n_heads, _ = heads.shape
    flat = heads.reshape(batch * n_heads, -1)
    total = 0.0
    for a in range(len(flat)):
        others = [j for j in range(len(flat)) if j != a]
        denominator = sum(math.exp(float(flat[a] @ flat[j]) / tau) for j in others)
        positives = [j for j in others if j // n_heads == a // n_heads]
        total += -sum(math.log(math.exp(float(flat[a] @ flat[p]) / tau) / denominator) for p in positives) / len(positives)
    return total / len(flat)


@pytest.mark.parametrize("n_heads,tau", [(2, 0.1), (3, 0.2), (4, 0.05)])
def test_headwise_ntxent_matches_hand_computation(n_heads, tau):
    generator = torch.Generator().manual_seed(n_heads)
    heads = F.normalize(torch.randn(3, n_heads, 5, generator=generator), dim=-1)
    assert HeadwiseNTXentLoss(tau)(heads).item() == pytest.approx(ntxent_by_hand(heads, tau), rel=1e-5)


def test_headwise_ntxent_on_a_tiny_batch_has_the_closed_form_value():
    # Two samples, two heads each; heads of a sample identical, samples orthogonal:
    # s(a, own other head) = 1, s(a, other sample's heads) = 0.
    heads = torch.tensor([[[1.0, 0.0], [1.0, 0.0]], [[0.0, 1.0], [0.0, 1.0]]])
    tau = 0.5
    expected = -math.log(math.exp(2.0) / (math.exp(2.0) + 2.0))
    assert HeadwiseNTXentLoss(tau)(heads).item() == pytest.approx(expected, rel=1e-6)


def test_headwise_ntxent_with_a_single_head_is_zero():
    heads = F.normalize(torch.randn(4, 1, 8), dim=-1)
    assert HeadwiseNTXentLoss(0.1)(heads).item() == 0.0


def test_softplus_ranking_loss_formula():
    query, positive, negative = unit([1.0, 0.0]), unit([1.0, 1.0]), unit([0.0, 1.0])
    s_pos, s_neg = 1 / math.sqrt(2), 0.0
    assert softplus_ranking_loss(query, positive, negative).item() == pytest.approx(math.log1p(math.exp(s_neg - s_pos)))


def random_rows(n: int, dim: int, seed: int) -> torch.Tensor:
    return F.normalize(torch.randn(n, dim, generator=torch.Generator().manual_seed(seed)), dim=1)


def test_softplus_ranking_module_and_function_agree():
    triplet = tuple(random_rows(5, 4, seed) for seed in range(3))
    assert torch.equal(SoftplusRankingLoss()(*triplet), softplus_ranking_loss(*triplet))


# --- nested widths ----------------------------------------------------------------------------


def test_nested_widths_loss_is_the_sum_of_the_inner_loss_at_each_prefix_width():
    query, positive, negative = (random_rows(6, 16, seed) * 3.0 for seed in range(3))  # not unit: prefix renormalises
    inner = SelfLimitingTripletLoss(margin=0.5)
    nested = NestedWidthsLoss(inner, dim=4)
    assert nested.widths(16) == nested_dims(4, 16) == [4, 8, 16]
    expected = sum(inner(prefix(query, m), prefix(positive, m), prefix(negative, m)) for m in (4, 8, 16))
    assert nested(query, positive, negative).item() == pytest.approx(expected.item(), rel=1e-6)
    explicit = NestedWidthsLoss(inner, widths=[8])(query, positive, negative)
    assert explicit.item() == pytest.approx(inner(prefix(query, 8), prefix(positive, 8), prefix(negative, 8)).item())


def test_nested_widths_loss_sums_each_term_of_a_tuple_loss_and_passes_keywords_unchanged():
    frozen, outputs = random_rows(8, 12, 0), random_rows(8, 12, 1) * 2.0
    inner = SimilarityPreservationLoss(neighbours=3)
    pair, topk = NestedWidthsLoss(inner, widths=[3, 6, 12])(outputs, frozen=frozen)
    per_width = [inner(prefix(outputs, m), frozen=frozen) for m in (3, 6, 12)]
    assert pair.item() == pytest.approx(sum(terms.pair for terms in per_width).item(), rel=1e-6)
    assert topk.item() == pytest.approx(sum(terms.topk for terms in per_width).item(), rel=1e-6)


def test_nested_widths_loss_needs_exactly_one_of_dim_and_widths():
    with pytest.raises(DiveError, match="exactly one"):
        NestedWidthsLoss(SoftplusRankingLoss())
    with pytest.raises(DiveError, match="exactly one"):
        NestedWidthsLoss(SoftplusRankingLoss(), dim=4, widths=[4, 8])


# --- Matryoshka-Adaptor's unsupervised losses -------------------------------------------------


def test_similarity_preservation_and_reconstruction_are_zero_for_the_identity_map():
    frozen = random_rows(10, 8, 2)
    pair, topk = SimilarityPreservationLoss(neighbours=4)(frozen.clone(), frozen=frozen)
    assert pair.item() == pytest.approx(0.0, abs=1e-6) and topk.item() == pytest.approx(0.0, abs=1e-6)
    assert ReconstructionLoss()(frozen.clone(), frozen).item() == 0.0


def test_topk_similarity_preservation_looks_only_at_the_nearest_frozen_neighbours():
    frozen = unit([1.0, 0.0, 0.0], [0.9, 0.1, 0.0], [0.0, 0.2, 1.0])
    reduced = frozen.clone()
    reduced[2] = unit([0.0, 1.0, 0.0])[0]  # moves only row 2, whose nearest row is 1
    pair, topk = SimilarityPreservationLoss(neighbours=1)(reduced, frozen=frozen)
    # rows 0 and 1 are each other's nearest neighbour; row 2's nearest is row 1, whose similarity moved
    s, s_new = float(frozen[2] @ frozen[1]), float(reduced[2] @ reduced[1])
    assert topk.item() == pytest.approx(abs(s_new - s) / 3, rel=1e-5)
    assert pair.item() > 0


def test_reconstruction_loss_is_the_elementwise_mean_absolute_change():
    inputs, outputs = torch.zeros(2, 4), torch.tensor([[1.0, 0, 0, 0], [0, -3.0, 0, 0]])
    assert ReconstructionLoss()(outputs, inputs).item() == pytest.approx(4.0 / 8)


# --- cross-batch memory -----------------------------------------------------------------------


def xbm(neighbours: int = 3, size: int = 20) -> CrossBatchMemoryLoss:
    return CrossBatchMemoryLoss(NeighbourSimilarityLoss(), memory_size=size, neighbours=neighbours)


def test_cross_batch_memory_with_an_empty_memory_is_zero_and_then_enqueues():
    loss_fn, anchors = xbm(), random_rows(4, 6, 0)
    loss = loss_fn(anchors, anchors * 0.5, encode=lambda vectors: vectors)
    assert loss.item() == 0.0
    assert torch.equal(loss_fn.memory.contents(), anchors)
    loss_fn(anchors, anchors, encode=lambda vectors: vectors, enqueue=anchors[:1])
    assert len(loss_fn.memory.contents()) == 5


def test_cross_batch_memory_identity_encoder_preserves_every_similarity():
    loss_fn = xbm()
    loss_fn.memory.add(random_rows(10, 6, 1))
    anchors = random_rows(4, 6, 2)
    assert loss_fn(anchors, anchors, encode=lambda vectors: vectors).item() == pytest.approx(0.0, abs=1e-6)


def test_cross_batch_memory_skips_copies_of_the_anchor_and_matches_the_inner_loss():
    memory, anchors = random_rows(6, 5, 3), random_rows(1, 5, 4)
    loss_fn = xbm(neighbours=2)
    loss_fn.memory.add(torch.cat([memory, anchors]))  # a copy of the anchor sits in the memory
    reduced, encode = random_rows(1, 5, 5), lambda vectors: F.normalize(vectors + 0.3, dim=1)
    top_similarity, top = (anchors @ memory.T).topk(2, dim=1)  # the copy must not be picked
    neighbours = encode(memory[top.reshape(-1)]).view(1, 2, -1)
    expected = NeighbourSimilarityLoss()(reduced, neighbours, top_similarity, torch.ones(1, 2, dtype=torch.bool))
    assert loss_fn(anchors, reduced, encode=encode).item() == pytest.approx(expected.item(), rel=1e-6)


def test_neighbour_similarity_ignores_padding_pairs():
    anchors = unit([1.0, 0.0])
    neighbours = unit([1.0, 0.0], [0.0, 1.0])[None]
    frozen_similarity = torch.tensor([[0.5, float("-inf")]])
    valid = torch.tensor([[True, False]])
    assert NeighbourSimilarityLoss()(anchors, neighbours, frozen_similarity, valid).item() == pytest.approx(0.5)


def test_cross_batch_memory_state_restores_into_a_fresh_wrapper():
    loss_fn = xbm(size=4)
    loss_fn.memory.add(random_rows(3, 3, 6))
    loss_fn.memory.add(random_rows(3, 3, 7))
    restored = xbm(size=4)
    restored.restore(loss_fn.state())
    assert torch.equal(restored.memory.contents(), loss_fn.memory.contents())
    assert (restored.memory.count, restored.memory.pointer) == (4, 2)
    loss_fn.reset()
    assert loss_fn.memory.contents() is None and loss_fn.state() == {}
