import math

import pytest
import torch
import torch.nn.functional as F

from dive.losses import HeadwiseNTXentLoss, SelfLimitingTripletLoss, softplus_ranking_loss


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
