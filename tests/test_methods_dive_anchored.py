"""DIVE-anchored: starts as PCA, each loss is what its docstring says, each switch does what it claims."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dive.errors import DiveError
from dive.losses import HeadwiseNTXentLoss, SimilarityPreservationLoss
from dive.methods import create_method, load_method
from dive.methods.dive_anchored import DiveAnchored, start_map, straight_through
from dive.methods.pca import Pca
from helpers import random_unit, toy_train_set

TRAIN = {"epochs": 3, "batch_size": 16, "lr": 1e-3, "progress": False}


def small(**overrides):
    return DiveAnchored(**{"dim": 4, "hidden": 16, "heads": 3, "train": TRAIN, **overrides})


def untrained(method, train_set):
    """The method as ``fit`` builds it, before its first step."""
    method.input_dim = train_set.dim
    method._start = start_map(method.config.init, train_set.doc_vectors, method.output_dim)
    method.module = method.build(train_set.dim)
    return method


def test_untrained_it_equals_pca_and_truncation_as_its_init_says():
    train_set = toy_train_set()
    vectors = random_unit(20, train_set.dim, seed=5)
    pca = Pca(dim=4).fit(train_set)
    np.testing.assert_allclose(untrained(small(), train_set).transform(vectors), pca.transform(vectors), atol=1e-5)
    truncated = vectors[:, :4] / np.linalg.norm(vectors[:, :4], axis=1, keepdims=True)
    np.testing.assert_allclose(untrained(small(init="truncate"), train_set).transform(vectors), truncated, atol=1e-6)
    random_start = untrained(small(init="random"), train_set).transform(vectors)
    assert not np.allclose(random_start, truncated, atol=1e-2)


def test_the_loss_is_triplet_plus_lambda_ntxent_plus_mu_corpus_similarity_preservation():
    method = small(margin=0.5, lambda_contrast=0.3, preserve=2.0, neighbours=3)
    train_set = toy_train_set()
    untrained(method, train_set)
    torch.nn.init.normal_(method.module.correction.weight, std=0.3)
    batch = next(iter(method.epoch_batches(train_set, np.random.default_rng(0))))
    assert len(batch) == 4 and batch[3].shape == batch[0].shape  # (q, p, n, corpus)
    parts = method.step(batch)
    q, p, n = (method.module(part) for part in batch[:3])
    triplet = F.relu(0.5 - ((q[:, 0] * p[:, 0]).sum(1) - (q[:, 0] * n[:, 0]).sum(1))).mean()
    contrast = sum(HeadwiseNTXentLoss(0.1)(part) for part in (q, p, n)) / 3
    preserve = sum(SimilarityPreservationLoss(3)(method.module(batch[3])[:, 0], frozen=batch[3]))
    assert parts["loss"].item() == pytest.approx((triplet + 0.3 * contrast + 2.0 * preserve).item(), rel=1e-5)
    assert parts["loss_preserve"].item() > 0


def test_layer_norm_gives_the_same_map_in_training_and_inference():
    train_set = toy_train_set()
    for norm, same in (("layer", True), ("batch", False)):
        method = untrained(small(norm=norm), train_set)
        torch.nn.init.normal_(method.module.correction.weight, std=0.3)
        vectors = torch.from_numpy(train_set.doc_vectors[:16])
        method.module.train()
        training = method.module(vectors)
        method.module.eval()
        assert torch.allclose(training, method.module(vectors), atol=1e-6) == same


@pytest.mark.parametrize("store_as", ["int8", "binary"])
def test_storage_aware_training_sees_stored_values_and_passes_gradients_straight_through(store_as):
    vectors = torch.tensor(random_unit(32, 8, seed=1), requires_grad=True)
    stored = straight_through(vectors, store_as)
    if store_as == "binary":
        np.testing.assert_allclose(np.abs(stored.detach().numpy()), 1 / 8 ** 0.5, rtol=1e-6)
    else:
        assert len(np.unique(stored.detach().numpy()[:, 0].round(5))) <= 256
        assert (stored - vectors).abs().max() < (vectors.max() - vectors.min()) / 255
    stored.sum().backward()
    assert torch.equal(vectors.grad, torch.ones_like(vectors))
    assert straight_through(vectors, "float32") is vectors


def test_it_trains_saves_and_loads_identically(tmp_path):
    train_set = toy_train_set()
    method = small(store_as="int8").fit(train_set)
    vectors = random_unit(10, train_set.dim, seed=2)
    out = method.transform(vectors)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    method.save(tmp_path)
    loaded = load_method(tmp_path)
    assert type(loaded) is DiveAnchored and loaded.config == method.config
    np.testing.assert_array_equal(loaded.transform(vectors), out)
    assert all("loss_preserve" in record for record in method.history)


def test_bad_settings_are_refused():
    for setting in ({"init": "zero"}, {"norm": "group"}, {"store_as": "int4"}, {"preserve": -1.0}):
        with pytest.raises(DiveError):
            create_method("dive-anchored", **setting)
