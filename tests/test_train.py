"""The generic training loop: per-epoch checkpoints and bit-identical resumption."""

import copy
from dataclasses import replace
from functools import partial

import numpy as np
import pytest
import torch

import dive.train
from dive.errors import DiveError
from dive.methods import create_method
from dive.methods.autoencoder import AutoencoderConfig, AutoencoderModule
from dive.methods.base import TorchAdapter
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


def test_starting_over_without_resume_discards_old_checkpoints_and_only_those(tmp_path, monkeypatch):
    """Issue 20, defect 2: a rerun without --resume over an interrupted run's checkpoints (and an older,
    longer run's) trains from scratch, keeps only its newest checkpoint, and leaves the user's files."""
    import shutil

    train_set = toy_train_set()
    uninterrupted = create_method("dive", **SETTINGS["dive"]).fit(train_set)
    with monkeypatch.context() as patch:
        interrupt_after(patch, 4)
        with pytest.raises(KeyboardInterrupt):
            create_method("dive", **SETTINGS["dive"]).checkpoint_to(tmp_path).fit(train_set)
    shutil.copytree(tmp_path / "epoch-00004", tmp_path / "epoch-00009")  # as an older 9-epoch run left it
    (tmp_path / ".epoch-abcd1234").mkdir()  # scratch of a run killed while saving
    (tmp_path / "notes.txt").write_text("the user's\n")
    (tmp_path / "epoch-plan").mkdir()  # named like dive's, but not a checkpoint
    (tmp_path / "epoch-00012").mkdir()
    (tmp_path / "epoch-00012" / "draft.txt").write_text("not a checkpoint either\n")
    again = create_method("dive", **SETTINGS["dive"]).checkpoint_to(tmp_path).fit(train_set)
    assert same_weights(again, uninterrupted)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["epoch-00006", "epoch-00012", "epoch-plan",
                                                                  "notes.txt"]


def test_a_folder_of_the_users_where_a_checkpoint_goes_is_refused_and_kept(tmp_path):
    (tmp_path / "epoch-00001").mkdir()
    (tmp_path / "epoch-00001" / "draft.txt").write_text("the user's\n")
    with pytest.raises(DiveError, match="epoch-00001: is in the way of a checkpoint and is not one of dive's"):
        create_method("dive", **SETTINGS["dive"]).checkpoint_to(tmp_path).fit(toy_train_set())
    assert sorted(str(path.relative_to(tmp_path)) for path in tmp_path.rglob("*")) == [
        "epoch-00001", "epoch-00001/draft.txt"]


def test_the_newest_checkpoint_is_the_highest_epoch_number(tmp_path):
    for epoch in (99999, 100000, 7):
        (tmp_path / f"epoch-{epoch:05d}").mkdir()
    saved = dive.train.Checkpointing(tmp_path).saved_epochs()
    assert [path.name for path in saved] == ["epoch-00007", "epoch-99999", "epoch-100000"]


def test_progress_bars_do_not_change_the_checkpoint_fingerprint(tmp_path):
    """Issue 20, defect 9: --resume --no-progress continues a run started with progress bars."""
    train_set = toy_train_set()
    shown = create_method("dive", **{**SETTINGS["dive"], "train": {**TRAIN, "progress": True}})
    hidden = create_method("dive", **SETTINGS["dive"])
    assert (shown.checkpoint_to(tmp_path).checkpointing(train_set).fingerprint
            == hidden.checkpoint_to(tmp_path).checkpointing(train_set).fingerprint)
    on_gpu = create_method("dive", **{**SETTINGS["dive"], "train": {**TRAIN, "device": "cuda"}})
    assert (on_gpu.checkpoint_to(tmp_path).checkpointing(train_set).fingerprint
            != hidden.checkpoint_to(tmp_path).checkpointing(train_set).fingerprint)  # kernels differ by device


# --- non-finite training ------------------------------------------------------------------------


def diverging_setup(bad_call, poison):
    """The regression setup whose step number ``bad_call`` (1-based, 4 steps per epoch) is poisoned."""
    module, step, batches = regression_setup()
    calls = {"n": 0}

    def poisoned_step(batch):
        calls["n"] += 1
        parts = step(batch)
        return poison(module, parts) if calls["n"] == bad_call else parts

    return module, poisoned_step, batches


def nan_loss(module, parts):
    return {"loss": parts["loss"] * float("nan"), "loss_part": parts["loss"] * float("inf")}


def inf_bias(module, parts):
    with torch.no_grad():
        module.second.bias.fill_(float("inf"))  # the loss already computed stays finite
    return parts


def test_a_loss_that_is_not_finite_stops_training_with_one_line_and_is_never_checkpointed(tmp_path):
    module, step, batches = diverging_setup(bad_call=6, poison=nan_loss)  # epoch 2, its second step
    checkpoint = dive.train.Checkpointing(tmp_path)
    with pytest.raises(dive.train.NonFiniteError) as error:
        dive.train.train_adapter(module, step, batches, STAGE_CONFIG, desc="train toy", checkpoint=checkpoint)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith("train toy, epoch 2: the training loss is not finite (loss = nan, loss_part = inf)")
    assert all(bool(torch.isfinite(tensor).all()) for tensor in module.state_dict().values())  # no step taken
    assert [path.name for path in checkpoint.saved_epochs()] == ["epoch-00001"]


def test_weights_that_become_non_finite_stop_training_before_they_are_checkpointed(tmp_path):
    module, step, batches = diverging_setup(bad_call=4, poison=inf_bias)  # the last step of epoch 1
    checkpoint = dive.train.Checkpointing(tmp_path)
    with pytest.raises(dive.train.NonFiniteError, match=r"epoch 1: the weights became NaN or infinite \(second.bias\)"):
        dive.train.train_adapter(module, step, batches, STAGE_CONFIG, checkpoint=checkpoint)
    assert not checkpoint.exists


def test_a_method_with_non_finite_weights_refuses_to_save(tmp_path):
    method = create_method("dive", **{**SETTINGS["dive"], "train": {**TRAIN, "epochs": 1}}).fit(toy_train_set())
    with torch.no_grad():
        next(method.module.parameters()).view(-1)[0] = float("nan")
    with pytest.raises(DiveError, match="hold NaN or infinite values; not saved"):
        method.save(tmp_path / "method")
    assert not (tmp_path / "method" / "weights.safetensors").exists()


# --- staged training ----------------------------------------------------------------------------


class TwoLayers(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.first, self.second = torch.nn.Linear(4, 4), torch.nn.Linear(4, 2)

    def forward(self, vectors):
        return self.second(torch.relu(self.first(vectors)))


def regression_data(n=32, seed=0):
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(n, 4, generator=generator)
    return inputs, inputs[:, :2] * 2.0 - 1.0


def regression_setup(seed=0):
    torch.manual_seed(seed)
    module = TwoLayers()
    inputs, targets = regression_data()

    def step(batch):
        loss = torch.nn.functional.mse_loss(module(batch[0]), batch[1])
        return {"loss": loss}

    def batches(rng):
        for rows in dive.train.batch_slices(len(inputs), 8, rng):
            yield inputs[rows], targets[rows]

    return module, step, batches


STAGE_CONFIG = dive.train.TrainConfig(epochs=3, lr=1e-2, progress=False)


def test_a_stage_that_freezes_a_submodule_leaves_its_weights_unchanged():
    module, step, batches = regression_setup()
    first_before = {name: tensor.clone() for name, tensor in module.first.state_dict().items()}
    second_before = {name: tensor.clone() for name, tensor in module.second.state_dict().items()}
    stage = dive.train.Stage(epochs=3, step=step, trains=lambda name: name.startswith("second."))
    history = dive.train.train_stages(module, [stage], batches, STAGE_CONFIG)
    assert len(history) == 3
    assert all(torch.equal(module.first.state_dict()[name], first_before[name]) for name in first_before)
    assert not torch.equal(module.second.weight, second_before["weight"])
    assert all(parameter.requires_grad for parameter in module.parameters())  # unfrozen afterwards


def test_a_parameter_filter_that_selects_nothing_is_refused():
    module, step, batches = regression_setup()
    with pytest.raises(DiveError, match="selects no parameter"):
        dive.train.train_stages(module, [dive.train.Stage(epochs=1, step=step, trains=lambda name: False)],
                                batches, STAGE_CONFIG)


def test_a_one_stage_schedule_is_plain_training():
    module, step, batches = regression_setup()
    staged = dive.train.train_stages(module, [dive.train.Stage(epochs=3, step=step)], batches, STAGE_CONFIG)
    plain_module, plain_step, plain_batches = regression_setup()
    plain = dive.train.train_adapter(plain_module, plain_step, plain_batches, STAGE_CONFIG)
    assert all(torch.equal(module.state_dict()[name], tensor) for name, tensor in plain_module.state_dict().items())
    assert [record["loss"] for record in staged] == [record["loss"] for record in plain]
    assert [record["epoch"] for record in staged] == [1, 2, 3] and "stage_width" not in staged[0]


def test_stages_run_in_order_with_their_own_epochs_seeds_and_cumulative_epoch_numbers():
    module, step, batches = regression_setup()
    stages = [dive.train.Stage(epochs=2, step=step, width=4, name="stage-0"),
              dive.train.Stage(epochs=1, step=step, width=2, name="stage-1", seed_offset=1,
                               trains=lambda name: name.startswith("second."))]
    history = dive.train.train_stages(module, stages, batches, STAGE_CONFIG)
    assert [(record["epoch"], record["stage_width"]) for record in history] == [(1, 4), (2, 4), (3, 2)]
    by_hand, by_hand_step, by_hand_batches = regression_setup()
    dive.train.train_adapter(by_hand, by_hand_step, by_hand_batches, replace(STAGE_CONFIG, epochs=2))
    dive.train.train_adapter(by_hand, by_hand_step, by_hand_batches, replace(STAGE_CONFIG, epochs=1, seed=1),
                             trains=lambda name: name.startswith("second."))
    assert all(torch.equal(module.state_dict()[name], tensor) for name, tensor in by_hand.state_dict().items())


class FrozenEncoderThenAll(TorchAdapter):
    """A throw-away staged method: the decoder alone first, then everything."""

    name = "test-two-stage"
    summary = reference = "test only"
    Config = AutoencoderConfig
    supervised = False

    def build(self, input_dim):
        self.encoder_at_stage_start = {}
        return AutoencoderModule(input_dim, self.config.hidden, self.config.dim)

    def encode(self, vectors):
        return torch.nn.functional.normalize(self.module.encoder(vectors), dim=1)

    def epoch_batches(self, train_set, rng):
        return self.corpus_batches(train_set, rng)

    def stages(self, train_set):
        decoder_only = lambda name: name.startswith("decoder.")  # noqa: E731
        return [dive.train.Stage(epochs=2, step=partial(self.step, stage="decoder"), name="decoder",
                                 trains=decoder_only),
                dive.train.Stage(epochs=1, step=partial(self.step, stage="all"), name="all", seed_offset=1)]

    def step(self, batch, stage=""):
        if stage not in self.encoder_at_stage_start:  # before the stage's first update
            self.encoder_at_stage_start[stage] = copy.deepcopy(self.module.encoder.state_dict())
        return {"loss": torch.nn.functional.mse_loss(self.module(batch[0])[1], batch[0])}


def test_a_method_declares_its_stages_and_each_checkpoints_in_its_own_folder(tmp_path):
    train_set = toy_train_set()
    settings = dict(dim=4, hidden=8, train={**TRAIN, "epochs": 3})
    method = FrozenEncoderThenAll(**settings).checkpoint_to(tmp_path).fit(train_set)
    start, after_decoder_stage = method.encoder_at_stage_start["decoder"], method.encoder_at_stage_start["all"]
    assert all(torch.equal(start[name], tensor) for name, tensor in after_decoder_stage.items())
    assert not torch.equal(method.module.encoder[0].weight, start["0.weight"])
    assert [record["epoch"] for record in method.history] == [1, 2, 3]
    assert sorted(str(path.relative_to(tmp_path)) for path in tmp_path.glob("*/epoch-*")) == [
        "all/epoch-00001", "decoder/epoch-00002"]
    resumed = FrozenEncoderThenAll(**settings).checkpoint_to(tmp_path, resume=True).fit(train_set)
    assert same_weights(resumed, method)


# --- model selection ------------------------------------------------------------------------


def scripted_validation(scores, module):
    """A validate() returning ``scores`` in turn, and the weights it saw at each call."""
    seen = []

    def validate():
        seen.append(copy.deepcopy(module.state_dict()))
        return scores[len(seen) - 1]

    return validate, seen


def test_validation_selection_keeps_the_best_epoch_with_ties_to_the_earlier_and_stops_on_patience():
    module, step, batches = regression_setup()
    validate, seen = scripted_validation([0.1, 0.3, 0.5, 0.5, 0.2, 0.4, 0.9], module)
    config = replace(STAGE_CONFIG, epochs=10, patience=3)
    history = dive.train.train_adapter(module, step, batches, config, validate)
    assert [record["val_ndcg@10"] for record in history] == [0.3, 0.5, 0.5, 0.2, 0.4]  # patience ran out
    (selection,) = history.selections
    assert (selection.rule, selection.kept_epoch, selection.epochs_run) == ("validation", 2, 5)
    assert (selection.start_score, selection.kept_score) == (0.1, 0.5)
    assert all(torch.equal(module.state_dict()[name], tensor) for name, tensor in seen[2].items())
    assert selection.describe() == "best validation nDCG@10 of epochs 0-5 (patience 3): epoch 2 kept"


def test_validation_selection_can_keep_the_untrained_start():
    module, step, batches = regression_setup()
    validate, seen = scripted_validation([0.8, 0.3, 0.2, 0.1], module)
    history = dive.train.train_adapter(module, step, batches, replace(STAGE_CONFIG, patience=0), validate)
    assert len(history) == 3 and history.selections[0].kept_epoch == 0  # patience 0: every epoch, best kept
    assert all(torch.equal(module.state_dict()[name], tensor) for name, tensor in seen[0].items())


def test_last_selection_trains_every_epoch_and_never_validates():
    module, step, batches = regression_setup()
    validate, seen = scripted_validation([0.9] + [0.0] * 3, module)
    history = dive.train.train_adapter(module, step, batches, replace(STAGE_CONFIG, selection="last"), validate)
    assert len(history) == 3 and not seen and "val_ndcg@10" not in history[0]
    assert history.selections[0].describe() == "fixed 3 epochs, last kept"


def test_a_resumed_selection_run_ends_as_an_uninterrupted_one(tmp_path):
    scores = [0.1, 0.4, 0.3, 0.6, 0.2, 0.1]
    module, step, batches = regression_setup()
    validate, _ = scripted_validation(scores, module)
    config = replace(STAGE_CONFIG, epochs=5, patience=2)
    whole = dive.train.train_adapter(module, step, batches, config, validate)
    resumed_module, resumed_step, resumed_batches = regression_setup()
    first, _ = scripted_validation(scores, resumed_module)
    checkpoint = dive.train.Checkpointing(tmp_path)
    dive.train.train_adapter(resumed_module, resumed_step, resumed_batches, replace(config, epochs=2), first,
                             checkpoint=checkpoint)
    rest, _ = scripted_validation(scores[3:], resumed_module)
    again = dive.train.train_adapter(resumed_module, resumed_step, resumed_batches, config, rest,
                                     checkpoint=dive.train.Checkpointing(tmp_path, resume=True))
    assert again.selections == whole.selections and len(again) == len(whole)
    assert all(torch.equal(resumed_module.state_dict()[name], tensor) for name, tensor in module.state_dict().items())


def test_bad_selection_settings_are_refused():
    with pytest.raises(DiveError, match="selection must be one of validation, last"):
        dive.train.TrainConfig(selection="best")
    with pytest.raises(DiveError, match="patience must be at least 0, got -1"):
        dive.train.TrainConfig(patience=-1)
@pytest.mark.parametrize("settings,message", [
    ({"lr": float("inf")}, "lr must be a finite number, got inf"),
    ({"lr": float("nan")}, "lr must be a finite number, got nan"),
    ({"lr": 0.0}, "lr must be above 0"),
    ({"weight_decay": -0.1}, "weight_decay must be at least 0"),
    ({"epochs": 0}, "epochs must be at least 1"),
    ({"batch_size": 1}, "batch_size must be at least 2"),
    ({"device": "tpu"}, "device must be cpu, cuda, cuda:N or mps, got 'tpu'"),
])
def test_train_config_refuses_settings_that_cannot_train(settings, message):
    with pytest.raises(DiveError, match=message):
        dive.train.TrainConfig(**settings)
    for device in ("cpu", "cuda", "cuda:1", "mps"):
        assert dive.train.TrainConfig(device=device).device == device
