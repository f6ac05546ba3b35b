"""The generic training loop: per-epoch checkpoints and bit-identical resumption."""

import numpy as np
import pytest
import torch

import dive.train
from dive.errors import DiveError
from dive.methods import create_method
from helpers import toy_train_set

TRAIN = {"epochs": 6, "batch_size": 16, "lr": 1e-3, "progress": False}
SETTINGS = {
    "dive": dict(dim=4, hidden=32, heads=3, train=TRAIN),
    "matryoshka-adaptor": dict(dim=4, hidden=32, train=TRAIN),
    "smec": dict(dim=4, hidden=32, train=TRAIN),  # three stages (16 -> 8 -> 4), each checkpointed
    "autoencoder": dict(dim=4, hidden=32, train=TRAIN),
}


def interrupt_after(monkeypatch, n_epochs):
    """Make the loop raise KeyboardInterrupt (like Ctrl-C) when epoch ``n_epochs + 1`` starts."""
    real_run_epoch, calls = dive.train._run_epoch, {"n": 0}

    def run_epoch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > n_epochs:
            raise KeyboardInterrupt
        return real_run_epoch(*args, **kwargs)

    monkeypatch.setattr(dive.train, "_run_epoch", run_epoch)


def same_weights(first, second):
    first_state, second_state = first.module.state_dict(), second.module.state_dict()
    assert first_state.keys() == second_state.keys()
    return all(torch.equal(first_state[name], second_state[name]) for name in first_state)


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_resumed_training_ends_with_the_same_weights_as_an_uninterrupted_run(tmp_path, monkeypatch, name):
    train_set = toy_train_set()
    uninterrupted = create_method(name, **SETTINGS[name]).fit(train_set)
    with monkeypatch.context() as patch:
        interrupt_after(patch, 4)
        with pytest.raises(KeyboardInterrupt):
            create_method(name, **SETTINGS[name]).checkpoint_to(tmp_path).fit(train_set)
    resumed = create_method(name, **SETTINGS[name]).checkpoint_to(tmp_path, resume=True).fit(train_set)
    assert same_weights(resumed, uninterrupted)
    assert [record["loss"] for record in resumed.history] == [record["loss"] for record in uninterrupted.history]
    np.testing.assert_array_equal(resumed.transform(train_set.doc_vectors), uninterrupted.transform(train_set.doc_vectors))


def test_a_checkpoint_from_other_settings_or_data_is_refused(tmp_path):
    train_set = toy_train_set()
    create_method("dive", **SETTINGS["dive"]).checkpoint_to(tmp_path).fit(train_set)
    with pytest.raises(DiveError, match="made with other settings or data"):
        create_method("dive", **{**SETTINGS["dive"], "margin": 0.3}).checkpoint_to(tmp_path, resume=True).fit(train_set)
    with pytest.raises(DiveError, match="made with other settings or data"):
        create_method("dive", **SETTINGS["dive"]).checkpoint_to(tmp_path, resume=True).fit(toy_train_set(n_queries=30))
    (latest,) = list(tmp_path.glob("epoch-*"))  # only the newest checkpoint is kept
    assert latest.name == "epoch-00006"
    (latest / "checkpoint.safetensors").write_bytes(b"torn")
    with pytest.raises(DiveError, match="checksum does not match"):
        create_method("dive", **SETTINGS["dive"]).checkpoint_to(tmp_path, resume=True).fit(train_set)
