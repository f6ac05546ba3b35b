"""Comparison methods: Matryoshka-Adaptor, Search-Adaptor, SMEC, PCA, autoencoder, DIVE ablations.

Small synthetic unit vectors (d = 32) and a couple of epochs: each test runs in seconds on CPU.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import random_unit

from dive.data.sets import EvalSet, TrainSet
from dive.data.triplets import MiningConfig, build_sampler
from dive.errors import DiveError
from dive.evaluate import evaluate_method, evaluate_vectors
from dive.losses import Memory, NestedWidthsLoss, SimilarityPreservationLoss, softplus_ranking_loss
from dive.methods import create_method, load_method
from dive.methods.autoencoder import Autoencoder
from dive.methods.dive import Dive
from dive.methods.dive_ablations import DiveNoContrast, DiveSingleHead
from dive.methods.matryoshka_adaptor import MatryoshkaAdaptor
from dive.methods.residual import nested_dims
from dive.methods.pca import Pca
from dive.methods.search_adaptor import SearchAdaptor
from dive.methods.smec import Smec, stage_schedule, stage_widths

DIM, K = 32, 8
TRAIN = {"epochs": 2, "batch_size": 16, "progress": False}
SMALL = {"hidden": 32, "train": TRAIN}
METHODS = {
    "matryoshka-adaptor": SMALL,
    "search-adaptor": SMALL,
    "smec": {**SMALL, "train": {**TRAIN, "epochs": 3}},
    "pca": {},
    "autoencoder": SMALL,
    "dive-no-contrast": SMALL,
    "dive-single-head": SMALL,
}


def synthetic(n_docs: int = 120, n_queries: int = 40, dim: int = DIM, seed: int = 0):
    """Docs are random unit vectors; query i is a noisy copy of doc i and relevant to it."""
    docs = random_unit(n_docs, dim, seed)
    queries = docs[:n_queries] + 0.6 * random_unit(n_queries, dim, seed + 1)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    query_ids, doc_ids = [f"q{i}" for i in range(n_queries)], [f"d{i}" for i in range(n_docs)]
    qrels = {f"q{i}": {f"d{i}": 1} for i in range(n_queries)}
    return query_ids, queries, doc_ids, docs, qrels


@pytest.fixture(scope="module")
def train_set() -> TrainSet:
    query_ids, queries, doc_ids, docs, qrels = synthetic()
    sampler = build_sampler(query_ids, queries, doc_ids, docs, qrels, MiningConfig(hard_top_k=10))
    return TrainSet(queries, docs, sampler)


@pytest.fixture(scope="module")
def eval_set() -> EvalSet:
    query_ids, queries, doc_ids, docs, qrels = synthetic(seed=5)
    return EvalSet(query_ids, queries, qrels, doc_ids, docs)


def unit_rows(n: int, dim: int = DIM, seed: int = 3) -> torch.Tensor:
    return torch.from_numpy(random_unit(n, dim, seed))


# --- every method -------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(METHODS))
def test_fit_transform_gives_unit_vectors_and_save_load_round_trips(name, train_set, tmp_path):
    method = create_method(name, dim=K, **METHODS[name]).fit(train_set)
    vectors = random_unit(50, DIM, seed=9)
    out = method.transform(vectors)
    assert out.shape == (50, K) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    method.save(tmp_path)
    loaded = load_method(tmp_path)
    assert type(loaded) is type(method) and loaded.config == method.config
    np.testing.assert_array_equal(loaded.transform(vectors), out)
    if name != "pca":
        stages = len(method.stages(train_set))  # SMEC and Matryoshka-Adaptor: up to train.epochs per stage
        assert len(method.history) == stages * method.config.train.epochs  # no validation slice: every epoch
        assert all(np.isfinite(record["loss"]) for record in method.history)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("name", [n for n in METHODS if n != "pca"])
def test_torch_methods_train_on_cuda(name, train_set):
    overrides = {**METHODS[name], "train": {**METHODS[name]["train"], "device": "cuda"}}
    out = create_method(name, dim=K, **overrides).fit(train_set).transform(random_unit(10, DIM))
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


# --- Matryoshka-Adaptor ---------------------------------------------------------------------


@pytest.mark.parametrize("k,d,expected", [(128, 384, [128, 256, 384]), (128, 4096, [128, 256, 512, 1024, 2048, 4096]),
                                          (100, 384, [100, 200, 384]), (384, 384, [384])])
def test_nested_dims_are_k_times_powers_of_two_below_d_plus_d(k, d, expected):
    assert nested_dims(k, d) == expected


def test_untrained_matryoshka_adaptor_is_truncation():
    method = MatryoshkaAdaptor(dim=K, hidden=16)
    method.input_dim, method.module = DIM, method.build(DIM)
    vectors = random_unit(20, DIM)
    expected = vectors[:, :K] / np.linalg.norm(vectors[:, :K], axis=1, keepdims=True)
    np.testing.assert_allclose(method.transform(vectors), expected, atol=1e-6)


def test_similarity_preservation_matches_a_hand_computation():
    frozen, outputs, widths = unit_rows(6), unit_rows(6, seed=4) * 2.0, [4, 8, DIM]
    nested = NestedWidthsLoss(SimilarityPreservationLoss(neighbours=2), widths=widths)
    loss_pair, loss_topk = nested(outputs, frozen=frozen)
    s = frozen @ frozen.T
    pair = topk = 0.0
    for m in widths:
        y = F.normalize(outputs[:, :m], dim=1)
        s_m = y @ y.T
        pair += np.mean([abs(float(s_m[i, j] - s[i, j])) for i in range(6) for j in range(6) if i != j])
        nearest = [[j for j in np.argsort(-s[i].numpy()) if j != i][:2] for i in range(6)]
        topk += np.mean([abs(float(s_m[i, j] - s[i, j])) for i in range(6) for j in nearest[i]])
    assert loss_pair.item() == pytest.approx(pair, rel=1e-5)
    assert loss_topk.item() == pytest.approx(topk, rel=1e-5)


@pytest.mark.parametrize("recipe", ["original", "dive-appendix"])
def test_matryoshka_losses_vanish_at_identity_except_ranking(train_set, recipe):
    method = MatryoshkaAdaptor(dim=DIM, hidden=16, recipe=recipe, train={"batch_size": 16})
    method.module = method.build(DIM)
    batch = next(iter(method.epoch_batches(train_set, np.random.default_rng(0))))
    assert len(batch) == 4 and batch[3].shape == batch[0].shape  # (q, p, n, corpus)
    parts = method.step(batch)
    for name in ("loss_pair", "loss_topk", "loss_rec"):
        assert parts[name].item() == pytest.approx(0.0, abs=1e-6)
    margin = (batch[0] * batch[2]).sum(1) - (batch[0] * batch[1]).sum(1)  # s(q, n) - s(q, p) at full width
    expected_rank = F.softplus(margin) if recipe == "original" else F.relu(margin + 0.1)
    assert parts["loss_rank"].item() == pytest.approx(expected_rank.mean().item(), rel=1e-5)


def test_matryoshka_original_recipe_trains_on_the_corpus_first_then_with_labels(train_set):
    method = MatryoshkaAdaptor(dim=K, **SMALL)
    stages = method.stages(train_set)
    assert [stage.name for stage in stages] == ["stage-0", "stage-1"]
    method.fit(train_set)
    epochs = SMALL["train"]["epochs"]
    assert all("loss_rank" not in record for record in method.history[:epochs])
    assert all("loss_rank" in record for record in method.history[epochs:])
    appendix = MatryoshkaAdaptor(dim=K, recipe="dive-appendix", **SMALL)
    assert len(appendix.stages(train_set)) == 1
    assert MatryoshkaAdaptor.protocol_settings("paper")["recipe"] == "dive-appendix"


def test_matryoshka_unsupervised_only_fits_on_corpus_vectors_alone(train_set):
    assert MatryoshkaAdaptor.supervised is True
    unsupervised = TrainSet.unsupervised(train_set.doc_vectors)
    with pytest.raises(DiveError, match="labelled"):
        MatryoshkaAdaptor(dim=K, **SMALL).fit(unsupervised)
    method = MatryoshkaAdaptor(dim=K, unsupervised_only=True, **SMALL)
    assert method.supervised is False
    method.fit(unsupervised)
    assert "loss_rank" not in method.history[0] and "loss_topk" in method.history[0]
    assert method.transform(random_unit(5, DIM)).shape == (5, K)


# --- Search-Adaptor -------------------------------------------------------------------------


def test_search_adaptor_starts_as_truncation_and_outputs_the_normalised_prefix_of_the_residual():
    method = SearchAdaptor(dim=K, hidden=16)
    method.input_dim, method.module = DIM, method.build(DIM)
    vectors = random_unit(20, DIM)
    expected = vectors[:, :K] / np.linalg.norm(vectors[:, :K], axis=1, keepdims=True)
    np.testing.assert_allclose(method.transform(vectors), expected, atol=1e-6)  # zero last layer: truncation
    torch.nn.init.normal_(method.module.adapter.net[2].weight)
    with torch.no_grad():
        residual = torch.from_numpy(vectors) + method.module.adapter.net(torch.from_numpy(vectors))
    np.testing.assert_allclose(method.transform(vectors), F.normalize(residual[:, :K], dim=1).numpy(), atol=1e-6)


def test_search_adaptor_loss_is_graded_ranking_plus_per_vector_recovery_plus_query_prediction():
    method = SearchAdaptor(dim=K, hidden=16, alpha=0.3, beta=0.2)
    method.module = method.build(DIM)
    torch.nn.init.normal_(method.module.adapter.net[2].weight, std=0.1)
    vectors = (unit_rows(5, seed=1), unit_rows(5, seed=2), unit_rows(5, seed=3))
    weight, grade = torch.tensor([1.0, 2.0, 1.0, 3.0, 1.0]), torch.tensor([1.0, 2.0, 3.0, 3.0, 1.0])
    parts = method.step((*vectors, weight, grade))
    out = [part + method.module.adapter.net(part) for part in vectors]
    q, hi, lo = (F.normalize(o[:, :K], dim=1) for o in out)
    rank = (weight * torch.log1p(torch.exp((q * lo).sum(1) - (q * hi).sum(1)))).mean()
    rec = sum((o - x).abs().sum(1).mean() for o, x in zip(out, vectors)) / 3
    pred = (grade * (q - method.module.predictor(hi)).abs().sum(1)).mean()
    assert parts["loss"].item() == pytest.approx((rank + 0.3 * rec + 0.2 * pred).item(), rel=1e-5)


def test_graded_pairs_weight_each_candidate_pair_by_its_grade_difference():
    docs = random_unit(30, DIM, 0)
    queries = random_unit(2, DIM, 1)
    qrels = {"q0": {"d0": 3, "d1": 1, "d2": 1}, "q1": {"d3": 2}}
    sampler = build_sampler(["q0", "q1"], queries, [f"d{i}" for i in range(30)], docs, qrels,
                            MiningConfig(negatives="random", negatives_per_positive=2))
    rows, weights, grades = sampler.graded_pairs(np.random.default_rng(0))
    with_negatives = rows[: len(sampler)]
    assert {(int(q), int(p)) for q, p, _ in with_negatives} == {(0, 0), (0, 1), (0, 2), (1, 3)}
    assert all(n not in ({0, 1, 2} if q == 0 else {3}) for q, _, n in with_negatives)  # never relevant to q
    expected = {(0, 0, 1): 2.0, (0, 0, 2): 2.0}  # the relevant pairs of q0 whose grades differ
    assert {tuple(map(int, row)): float(w) for row, w in zip(rows[len(sampler):], weights[len(sampler):])} == expected
    assert all(float(w) == float(g) for (q, p, _), w, g in zip(with_negatives, weights, grades))
    assert float(grades[len(sampler)]) == 3.0


def test_search_adaptor_dive_appendix_recipe_is_the_dive_papers_restatement():
    method = SearchAdaptor(dim=K, hidden=16, recipe="dive-appendix")
    method.module = method.build(DIM)
    batch = (unit_rows(5, seed=1), unit_rows(5, seed=2), unit_rows(5, seed=3))
    parts = method.step(batch)
    out = [part + method.module.adapter.net(part) for part in batch]
    assert not torch.allclose(out[0], batch[0])  # Xavier: not the identity
    q, p, n = (F.normalize(o[:, :K], dim=1) for o in out)
    rank = torch.log1p(torch.exp((q * n).sum(1) - (q * p).sum(1))).mean()
    rec = sum((o - x).abs().mean() for o, x in zip(out, batch)) / 3
    assert parts["loss"].item() == pytest.approx((rank + 0.1 * rec).item(), rel=1e-5)


# --- SMEC -----------------------------------------------------------------------------------


@pytest.mark.parametrize("k,d,expected", [(128, 384, [384, 256, 128]), (128, 4096, [4096, 512, 128]),
                                          (64, 384, [384, 256, 64]), (256, 384, [384, 256]), (384, 384, [384])])
def test_smec_stage_widths(k, d, expected):
    assert stage_widths(k, d) == expected


@pytest.mark.parametrize("epochs,expected", [(50, [(384, 10), (256, 10), (128, 30)]),
                                             (10, [(384, 2), (256, 2), (128, 6)]),
                                             (3, [(384, 1), (256, 1), (128, 1)]),
                                             (2, [(256, 1), (128, 1)]), (1, [(128, 1)])])
def test_smec_stage_epochs_give_the_last_stage_the_most(epochs, expected):
    assert stage_schedule(128, 384, epochs) == expected


def test_smec_keeps_the_top_k_gated_dims_sorted_by_index():
    method = Smec(dim=K, hidden=16, recipe="dive-appendix")
    method.input_dim, method.module = DIM, method.build(DIM)
    assert method.module.kept(K).tolist() == list(range(K))  # zero logits: ties -> first k dims
    logits = torch.randn(DIM, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        method.module.ads_logits.copy_(logits)
    index = method.module.kept(K)
    assert index.tolist() == sorted(torch.topk(logits, K).indices.tolist())
    vectors = random_unit(20, DIM)
    with torch.no_grad():
        out = method.module.residual(torch.from_numpy(vectors))
    np.testing.assert_allclose(method.transform(vectors), F.normalize(out[:, index], dim=1).numpy(), atol=1e-6)


def test_smec_straight_through_gate_keeps_values_and_trains_the_logits():
    module = Smec(dim=K, hidden=16, recipe="dive-appendix").build(DIM)
    vectors = unit_rows(10)
    module.eval()
    evaluated = module(vectors, K)
    module.train()
    trained = module(vectors, K)
    torch.testing.assert_close(trained, evaluated)
    trained[:, 0].sum().backward()
    assert module.ads_logits.grad[:K].abs().sum() > 0 and module.ads_logits.grad[K:].abs().sum() == 0


def test_smec_memory_is_a_fifo_of_the_latest_vectors():
    memory = Memory(5)
    assert memory.contents() is None
    rows = torch.arange(7, dtype=torch.float32)[:, None].repeat(1, 2)
    memory.add(rows[:3])
    memory.add(rows[3:])
    assert sorted(memory.contents()[:, 0].tolist()) == [2, 3, 4, 5, 6]


def test_smec_xbm_loss_matches_a_hand_computation():
    method = Smec(dim=K, hidden=16, neighbours=3, recipe="dive-appendix")
    method.module = method.build(DIM)
    memory = unit_rows(12, seed=7)
    anchors = torch.cat([unit_rows(3, seed=8), memory[:1]])  # the last anchor is also in memory
    method.xbm_loss.memory.add(memory)
    reduced = method.module(anchors, K)
    loss = method.xbm_loss(anchors, reduced, encode=lambda vectors: method.module(vectors, K)).item()
    reduced = reduced.detach()
    expected = []
    for a in range(len(anchors)):
        similarity = (memory @ anchors[a]).tolist()
        order = [j for j in np.argsort(similarity)[::-1] if similarity[j] < 1 - 1e-6][:3]
        with torch.no_grad():
            expected += [abs(float(reduced[a] @ method.module(memory[j:j + 1], K)[0]) - similarity[j]) for j in order]
    assert loss == pytest.approx(np.mean(expected), rel=1e-5)


def test_smec_dive_appendix_history_runs_its_stages_in_order(train_set):
    method = Smec(dim=K, hidden=16, recipe="dive-appendix", train={**TRAIN, "epochs": 5}).fit(train_set)
    schedule = stage_schedule(K, DIM, 5)
    assert schedule == [(DIM, 1), (16, 1), (K, 3)]
    assert [record["stage_width"] for record in method.history] == [w for w, epochs in schedule for _ in range(epochs)]
    assert [record["epoch"] for record in method.history] == [1, 2, 3, 4, 5]


def test_smec_untrained_is_truncation_and_each_stage_starts_from_what_the_last_kept(train_set):
    method = Smec(dim=K, train=TRAIN)
    method.input_dim, method.module = DIM, method.build(DIM)
    vectors = random_unit(20, DIM)
    np.testing.assert_allclose(method.transform(vectors), vectors[:, :K] / np.linalg.norm(vectors[:, :K], axis=1,
                                                                                          keepdims=True), atol=1e-6)
    stages = method.stages(train_set)
    assert [stage.width for stage in stages] == [DIM, 16, K]
    with torch.no_grad():
        method.module.stages[0].ads_logits.copy_(torch.randn(DIM, generator=torch.Generator().manual_seed(1)))
    stages[1].start()
    kept = sorted(torch.topk(method.module.stages[0].ads_logits, 16).indices.tolist())
    np.testing.assert_allclose(method.module.stages[1].linear(torch.from_numpy(vectors)).detach().numpy(),
                               vectors[:, kept], atol=1e-6)
    method.active_stage = 0
    end_of_stage_0 = method.transform(vectors)
    method.active_stage = 1
    np.testing.assert_allclose(method.transform(vectors), end_of_stage_0, atol=1e-6)  # same top-k dims


def test_smec_trains_one_stage_at_a_time_with_the_loss_at_its_width_and_the_next(train_set):
    method = Smec(dim=K, train={**TRAIN, "epochs": 1})
    method.input_dim, method.module = DIM, method.build(DIM)
    batch = (unit_rows(6, seed=1), unit_rows(6, seed=2), unit_rows(6, seed=3))
    parts = method.smrl_step(batch, stage=1)  # memory empty: only the ranking terms
    expected = sum(softplus_ranking_loss(*(method.module(part, 1, width) for part in batch)) for width in (16, K))
    assert parts["loss"].item() == pytest.approx(expected.item(), rel=1e-6)
    before = {name: tensor.clone() for name, tensor in method.module.state_dict().items()}
    method.fit(train_set)
    after = method.module.state_dict()
    assert all(not torch.equal(before[name], after[name]) for name in ("stages.0.linear.weight",
                                                                        "stages.2.linear.weight"))
    assert [record["stage_width"] for record in method.history] == [DIM, 16, K]
    layers = method.linear_layers()
    assert len(layers) == 1 and layers[0][0].shape == (K, DIM)
    vectors = random_unit(20, DIM)
    composed = vectors @ layers[0][0].numpy().T + layers[0][1].numpy()
    np.testing.assert_allclose(method.transform(vectors), composed / np.linalg.norm(composed, axis=1, keepdims=True),
                               atol=1e-5)


def test_smec_stage_parameter_filters_freeze_the_earlier_stages():
    method = Smec(dim=K)
    method.module = method.build(DIM)
    names = [name for name, _ in method.module.named_parameters()]
    trains = [stage.trains for stage in method.stages(TrainSet(random_unit(2, DIM), random_unit(4, DIM), None))]
    assert [[name for name in names if train(name)] for train in trains] == [
        [f"stages.{i}.ads_logits", f"stages.{i}.linear.weight", f"stages.{i}.linear.bias"] for i in range(3)]


def test_smec_early_stopping_validates_every_stage(train_set, eval_set):
    with_validation = replace(train_set, validation=eval_set)
    method = Smec(dim=K, hidden=16, train={**TRAIN, "epochs": 5, "patience": 1}).fit(with_validation)
    assert all("val_ndcg@10" in record for record in method.history)
    assert {record["stage_width"] for record in method.history} == {DIM, 16, K}


# --- PCA and autoencoder --------------------------------------------------------------------


def test_pca_at_full_dim_preserves_frozen_rankings(train_set, eval_set):
    method = Pca(dim=DIM).fit(train_set)
    queries, docs = method.transform(eval_set.query_vectors), method.transform(eval_set.doc_vectors)
    np.testing.assert_allclose(queries @ docs.T, eval_set.query_vectors @ eval_set.doc_vectors.T, atol=1e-5)
    frozen = evaluate_method(None, eval_set)
    for name, value in evaluate_vectors(queries, docs, eval_set).items():
        assert value == pytest.approx(frozen[name], abs=1e-6)


def test_pca_projects_onto_orthonormal_principal_axes(train_set):
    method = Pca(dim=K).fit(train_set)
    components = method.components.numpy()
    np.testing.assert_allclose(components @ components.T, np.eye(K), atol=1e-5)
    centred = train_set.doc_vectors - train_set.doc_vectors.mean(axis=0)
    variances = np.var(centred @ components.T, axis=0)
    assert np.all(np.diff(variances) <= 1e-7)  # decreasing explained variance
    vectors = random_unit(5, DIM)
    projected = vectors @ components.T
    np.testing.assert_allclose(method.transform(vectors), projected / np.linalg.norm(projected, axis=1, keepdims=True),
                               atol=1e-6)
    centred_method = Pca(dim=K, center=True).fit(train_set)
    projected = (vectors - method.mean.numpy()) @ components.T
    np.testing.assert_allclose(centred_method.transform(vectors),
                               projected / np.linalg.norm(projected, axis=1, keepdims=True), atol=1e-5)


def test_autoencoder_reconstruction_loss_falls_and_code_is_normalised_encoder(train_set):
    method = Autoencoder(dim=K, hidden=64, train={**TRAIN, "epochs": 6, "lr": 1e-3}).fit(train_set)
    losses = [record["loss"] for record in method.history]
    assert all(later < earlier for earlier, later in zip(losses, losses[1:]))
    assert losses[-1] < 0.9 * losses[0]
    vectors = random_unit(5, DIM)
    with torch.no_grad():
        code = F.normalize(method.module.encoder(torch.from_numpy(vectors)), dim=1).numpy()
    np.testing.assert_allclose(method.transform(vectors), code, atol=1e-6)


def test_unsupervised_methods_fit_without_labels(train_set):
    unsupervised = TrainSet.unsupervised(train_set.doc_vectors)
    for method in (Pca(dim=K), Autoencoder(dim=K, **SMALL)):
        assert method.fit(unsupervised).transform(random_unit(3, DIM)).shape == (3, K)


# --- DIVE ablations -------------------------------------------------------------------------


@pytest.mark.parametrize("dataset", [None, "scifact", "arguana"])
def test_ablation_names_produce_the_configs_they_claim(dataset):
    base = Dive.default_config(dataset)
    assert create_method("dive-no-contrast", dataset).config == replace(base, lambda_contrast=0.0)
    assert create_method("dive-single-head", dataset).config == replace(base, heads=1)
    assert DiveNoContrast().config.lambda_contrast == 0.0 and DiveSingleHead().config.heads == 1


def test_ablations_refuse_overrides_that_undo_them():
    with pytest.raises(DiveError, match="lambda_contrast"):
        create_method("dive-no-contrast", "scifact", lambda_contrast=0.3)
    with pytest.raises(DiveError, match="heads"):
        create_method("dive-single-head", heads=4)
    assert create_method("dive-single-head", margin=0.5).config.margin == 0.5

