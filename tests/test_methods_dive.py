from pathlib import Path

import numpy as np
import pytest
import torch

from dive.errors import DiveError
from dive.methods import create_method, load_method
from dive.methods.dive import PAPER_TABLE_8, Dive, MultiHeadAdapter, parameter_count
from dive.evaluate import evaluate_method
from helpers import synthetic_embeddings, toy_train_set


def small_dive(**overrides):
    settings = dict(dim=4, hidden=32, heads=3, margin=0.5, temperature=0.1,
                    train={"epochs": 8, "batch_size": 32, "lr": 1e-3, "progress": False})
    settings.update(overrides)
    return create_method("dive", **settings)


@pytest.mark.parametrize("input_dim,hidden,dim,heads", [(384, 2048, 128, 4), (4096, 2048, 128, 4), (16, 32, 4, 3)])
def test_parameter_count_matches_spec_formula(input_dim, hidden, dim, heads):
    module = MultiHeadAdapter(input_dim, hidden, dim, heads)
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    assert trainable == parameter_count(input_dim, hidden, dim, heads)


def test_architecture_has_batchnorm_on_the_first_layer_only_and_xavier_init():
    module = MultiHeadAdapter(64, 32, 4, 2)
    layers = list(module.net)
    batchnorms = [i for i, layer in enumerate(layers) if isinstance(layer, torch.nn.BatchNorm1d)]
    assert batchnorms == [1]
    for layer in layers:
        if isinstance(layer, torch.nn.Linear):
            bound = (6 / (layer.in_features + layer.out_features)) ** 0.5
            assert layer.weight.abs().max() <= bound
            assert layer.weight.abs().max() > 0.5 * bound


def test_table_8_defaults_are_selected_by_dataset_name():
    for name, (margin, lambda_contrast, temperature, heads) in PAPER_TABLE_8.items():
        config = Dive.default_config(name)
        assert (config.margin, config.lambda_contrast, config.temperature, config.heads) == \
            (margin, lambda_contrast, temperature, heads)
    other = Dive.default_config("cranfield")
    assert (other.margin, other.lambda_contrast, other.temperature, other.heads) == (0.7, 0.1, 0.1, 4)
    assert (other.hidden, other.train.epochs, other.train.batch_size, other.train.lr) == (2048, 50, 128, 2e-4)
    assert create_method("dive", "scifact", margin=0.9).config.margin == 0.9  # explicit settings win


def test_transform_returns_unit_vectors_of_dim_from_head_one():
    train_set = toy_train_set()
    method = small_dive().fit(train_set)
    compressed = method.transform(train_set.doc_vectors)
    assert compressed.shape == (60, 4) and compressed.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(compressed, axis=1), 1.0, atol=1e-5)
    with torch.no_grad():
        heads = method.module(torch.from_numpy(train_set.doc_vectors))
    np.testing.assert_allclose(compressed, heads[:, 0].numpy(), atol=1e-6)


def test_training_records_every_loss_part_and_the_active_ratio_falls():
    method = small_dive(train={"epochs": 15, "batch_size": 32, "lr": 2e-3, "progress": False}).fit(toy_train_set())
    history = method.history
    assert [record["epoch"] for record in history] == list(range(1, 16))
    for record in history:
        assert {"loss", "loss_triplet", "loss_contrast", "active_ratio", "seconds"} <= set(record)
        assert record["loss"] == pytest.approx(record["loss_triplet"] + 0.1 * record["loss_contrast"], rel=1e-5)
        assert 0.0 <= record["active_ratio"] <= 1.0
    assert history[-1]["active_ratio"] < history[0]["active_ratio"]


def test_ablation_switches_remove_the_contrastive_term():
    no_contrast = small_dive(lambda_contrast=0.0, train={"epochs": 2, "batch_size": 32, "progress": False}).fit(toy_train_set())
    single_head = small_dive(heads=1, train={"epochs": 2, "batch_size": 32, "progress": False}).fit(toy_train_set())
    for method in (no_contrast, single_head):
        for record in method.history:
            assert record["loss"] == pytest.approx(record["loss_triplet"])
    assert all(record["loss_contrast"] == 0.0 for record in single_head.history)


def test_same_seed_gives_bit_identical_adapters_and_metrics_on_cpu():
    first = small_dive().fit(toy_train_set())
    second = small_dive().fit(toy_train_set())
    for name, tensor in first.tensors().items():
        assert torch.equal(tensor, second.tensors()[name]), name
    eval_set = synthetic_embeddings(60, 40).eval_set({f"q{i}": {f"d{i}": 1} for i in range(40)})
    assert evaluate_method(first, eval_set) == evaluate_method(second, eval_set)
    third = small_dive(train={"epochs": 8, "batch_size": 32, "lr": 1e-3, "progress": False, "seed": 1}).fit(toy_train_set())
    assert not torch.equal(first.tensors()["net.0.weight"], third.tensors()["net.0.weight"])


def test_save_load_round_trip_gives_identical_outputs(tmp_path):
    train_set = toy_train_set()
    method = small_dive().fit(train_set)
    method.save(tmp_path / "fitted")
    assert sorted(p.name for p in (tmp_path / "fitted").iterdir()) == ["config.json", "weights.safetensors"]
    loaded = load_method(tmp_path / "fitted")
    assert isinstance(loaded, Dive) and loaded.config == method.config
    np.testing.assert_array_equal(loaded.transform(train_set.doc_vectors), method.transform(train_set.doc_vectors))


def test_load_refuses_altered_or_missing_weights_and_pickles(tmp_path):
    method = small_dive(train={"epochs": 1, "batch_size": 32, "progress": False}).fit(toy_train_set())
    folder = method.save(tmp_path / "fitted")
    weights = folder / "weights.safetensors"
    original = weights.read_bytes()
    weights.write_bytes(original[:-8] + b"\x00" * 8)
    with pytest.raises(DiveError, match="checksum does not match"):
        load_method(folder)
    import pickle

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    weights.write_bytes(pickle.dumps(Payload()))
    with pytest.raises(DiveError, match="checksum"):
        load_method(folder)
    # even with a matching checksum, a pickle is never unpickled: safetensors refuses it
    import json

    from dive.utils import sha256_file

    record = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**record, "payload_sha256": sha256_file(weights)}))
    with pytest.raises(DiveError, match="not a readable safetensors file"):
        load_method(folder)
    assert not marker.exists()  # the payload never ran
    (folder / "config.json").write_text(json.dumps({**record, "dive_version": "99.0"}))
    with pytest.raises(DiveError, match="newer than this dive"):
        load_method(folder)
    weights.unlink()
    (folder / "config.json").write_text(json.dumps(record))
    with pytest.raises(DiveError, match="weights.safetensors is missing"):
        load_method(folder)


def test_bad_inputs_fail_clearly():
    train_set = toy_train_set()
    with pytest.raises(DiveError, match="not fitted"):
        small_dive().transform(train_set.doc_vectors)
    method = small_dive(train={"epochs": 1, "batch_size": 32, "progress": False}).fit(train_set)
    with pytest.raises(DiveError, match="dimension 8 does not match the expected 16"):
        method.transform(train_set.doc_vectors[:, :8])
    bad = train_set.doc_vectors.copy()
    bad[3, 2] = np.nan
    with pytest.raises(DiveError, match="row 3 contains NaN"):
        method.transform(bad)
    with pytest.raises(DiveError, match="target dim 32 must be between 1 and the input dim 16"):
        small_dive(dim=32).fit(train_set)
    with pytest.raises(DiveError, match="unknown setting 'margn'"):
        create_method("dive", margn=0.3)
    with pytest.raises(DiveError, match="unknown method"):
        create_method("magic")
