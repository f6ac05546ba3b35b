"""One generic training loop for every torch adapter.

A method supplies a module, a ``step(batch) -> {"loss": ..., other parts}`` function and an
iterator of batches per epoch; this loop does the rest: AdamW, seeding, device placement, a
progress bar, per-epoch records of every loss part (and, when a step reports ``n_active``,
the active triplet ratio of DIVE's Section 5.2), optional early stopping, and optional
per-epoch checkpoints from which an interrupted run resumes to bit-identical weights.

Staged training is data: a schedule of :class:`Stage` s (epochs, which parameters train,
which step) run one after the other by :func:`train_stages`; one stage is plain training.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import re
import shutil
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
from safetensors.torch import load as load_tensors_bytes
from tqdm.auto import tqdm

from dive import checks
from dive.errors import DiveError
from dive.saved import CONFIG_FILE, read_saved, torch_payload, write_saved

log = logging.getLogger(__name__)

Batch = tuple[torch.Tensor, ...]
StepFn = Callable[[Batch], dict[str, torch.Tensor]]
EpochBatches = Callable[[np.random.Generator], Iterable[Batch]]
ParameterFilter = Callable[[str], bool]
"""Selects parameters by their ``module.named_parameters()`` name (True = trains)."""


SELECTION_RULES = ("validation", "last")
"""How the kept weights are chosen: see :attr:`TrainConfig.selection`."""


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings shared by every torch adapter.

    Defaults are the DIVE paper's common budget for all adapters (Section 4.1: "50 epochs with
    AdamW (lr=2e-4, batch size=128)"); weight decay is torch's AdamW default (0.01), which the
    paper does not change. Model selection is SPEC "Protocols" (model selection).

    Attributes:
        epochs: the most epochs to train (the paper's fixed 50).
        selection: ``validation`` (default): when the training set has a validation slice (the
            ``heldout`` protocol), score validation nDCG@10 before training (the untrained start)
            and after every epoch, and keep the best (ties to the earlier epoch); without a
            slice (the ``paper`` protocol) train all ``epochs`` and keep the last, as the paper.
            ``last``: always train all ``epochs`` and keep the last.
        patience: with ``validation`` selection, stop after this many epochs without a better
            validation score; 0 trains all ``epochs`` (and still keeps the best). Default 5
            epochs: at batch 128 an epoch is 30-40 steps on scifact and cranfield, so this is
            about the 125-step patience of Search-Adaptor's public re-implementations.
    """

    epochs: int = 50
    batch_size: int = 128
    lr: float = 2e-4
    weight_decay: float = 0.01
    seed: int = 0
    device: str = "cpu"
    selection: str = "validation"
    patience: int = 5
    progress: bool = True

    def __post_init__(self) -> None:
        checks.whole_at_least("epochs", self.epochs, 1)
        checks.whole_at_least("batch_size", self.batch_size, 2)
        checks.above("lr", self.lr, 0)
        checks.at_least("weight_decay", self.weight_decay, 0)
        checks.one_of("selection", self.selection, SELECTION_RULES)
        checks.whole_at_least("patience", self.patience, 0)
        checks.device("device", self.device)


DISPLAY_ONLY_SETTINGS = frozenset({"progress"})
""":class:`TrainConfig` fields that change what is shown, never the weights (``device`` does change them:
kernels differ). Left out of the settings that checkpoints and grid cells are matched on."""


def result_settings(method_config: dict[str, Any]) -> dict[str, Any]:
    """A method config dict (``to_dict(method.config)``) without its display-only training settings."""
    train = method_config.get("train")
    if not isinstance(train, dict):
        return dict(method_config)
    return {**method_config, "train": {key: value for key, value in train.items() if key not in DISPLAY_ONLY_SETTINGS}}


class NonFiniteError(DiveError):
    """Training diverged: a loss or a weight became NaN or infinite. Nothing of such a run is kept."""


def resolve_device(device: str) -> torch.device:
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise DiveError("device 'cuda' asked for, but torch sees no CUDA GPU")
    return torch.device(device)


def batch_slices(n_items: int, batch_size: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Shuffled index batches; a trailing batch of one is dropped (BatchNorm cannot train on it)."""
    order = rng.permutation(n_items)
    for start in range(0, n_items, batch_size):
        chunk = order[start:start + batch_size]
        if len(chunk) > 1:
            yield chunk


CHECKPOINT_FORMAT = "dive-checkpoint/1"
CHECKPOINT_TENSORS = "checkpoint.safetensors"
EPOCH_FOLDER = re.compile(r"epoch-(\d+)")
"""A complete checkpoint: ``epoch-00012`` holds the state after epoch 12 (it appears by one atomic rename)."""
SCRATCH_PREFIX = ".epoch-"
SCRATCH_FOLDER = re.compile(r"\.epoch-[a-z0-9_]{8}")
"""A checkpoint being written (``tempfile.mkdtemp(prefix=SCRATCH_PREFIX)``), left behind by a killed run."""


@dataclass
class Checkpointing:
    """Where ``train_adapter`` saves its state after every epoch, and whether to resume from it.

    A checkpoint holds the weights, the AdamW state, the numpy and torch random states, the
    history and the model-selection state (JSON + safetensors, checksum verified, no pickle),
    so a resumed run on the same device ends with the same weights as an uninterrupted one.
    ``fingerprint`` identifies the run's settings and data: a checkpoint with another one is
    refused. ``extra_state`` / ``restore_extra`` carry method state outside the module (e.g.
    SMEC's cross-batch memory).
    """

    directory: Path
    resume: bool = False
    fingerprint: str = ""
    extra_state: Callable[[], dict[str, torch.Tensor]] = field(default=lambda: {})
    restore_extra: Callable[[dict[str, torch.Tensor]], None] = field(default=lambda tensors: None)

    def saved_epochs(self) -> list[Path]:
        """Complete checkpoint folders, oldest first by epoch number (each appears by one atomic rename)."""
        directory = Path(self.directory)
        if not directory.is_dir():
            return []
        saved = [path for path in directory.iterdir() if _is_checkpoint(path)]
        return sorted(saved, key=lambda path: int(EPOCH_FOLDER.fullmatch(path.name).group(1)))

    @property
    def exists(self) -> bool:
        return bool(self.saved_epochs())

    def discard(self, keep: Path | None = None) -> bool:
        """Delete what dive wrote here (checkpoints other than ``keep``, scratch of killed saves), nothing
        else; True if there was any."""
        directory = Path(self.directory)
        if not directory.is_dir():
            return False
        found = [path for path in directory.iterdir()
                 if path != keep and (_is_checkpoint(path) or _is_scratch(path))]
        for path in found:
            shutil.rmtree(path)
        return bool(found)


def _is_checkpoint(path: Path) -> bool:
    """A folder ``epoch-N`` holding only what :func:`_save_checkpoint` writes (never a user's own folder)."""
    return (EPOCH_FOLDER.fullmatch(path.name) is not None and path.is_dir() and not path.is_symlink()
            and all(child.name in (CONFIG_FILE, CHECKPOINT_TENSORS) for child in path.iterdir()))


def _is_scratch(path: Path) -> bool:
    return SCRATCH_FOLDER.fullmatch(path.name) is not None and path.is_dir() and not path.is_symlink()


@dataclass
class Selection:
    """Which weights a training run (one stage) kept, and by which rule (recorded with every result).

    Attributes:
        rule: ``validation`` (best validation nDCG@10, the untrained start included) or ``last``.
        kept_epoch: the epoch whose weights were kept, counted within the stage; 0 = the start.
        epochs_run: epochs trained before the stage ended (fewer than asked when patience ran out).
        patience: epochs without a better validation score that ended the stage (0: never).
        start_score: validation nDCG@10 of the start (``validation`` rule only).
        kept_score: validation nDCG@10 of the kept weights (``validation`` rule only).
    """

    rule: str
    kept_epoch: int
    epochs_run: int
    patience: int = 0
    start_score: float | None = None
    kept_score: float | None = None

    def describe(self) -> str:
        if self.rule == "last":
            return f"fixed {self.epochs_run} epochs, last kept"
        return (f"best validation nDCG@10 of epochs 0-{self.epochs_run} (patience {self.patience}): "
                f"epoch {self.kept_epoch} kept")


class History(list):
    """Per-epoch records (a plain list of dicts) and :attr:`selections`, one :class:`Selection` per stage."""

    def __init__(self, records: Iterable[dict[str, float]] = (), selections: Sequence[Selection] = ()):
        super().__init__(records)
        self.selections: list[Selection] = list(selections)


@dataclass
class _LoopState:
    history: list[dict[str, float]]
    best_score: float = -np.inf
    best_state: dict[str, torch.Tensor] | None = None
    kept_epoch: int = 0
    start_score: float | None = None
    epochs_without_gain: int = 0
    stopped: bool = False


@dataclass(frozen=True)
class Stage:
    """One stage of a training schedule (see :func:`train_stages`).

    Attributes:
        epochs: epochs of this stage.
        step: the loss parts of one batch, ``step(batch) -> {"loss": ..., other parts}``.
        trains: which parameters train, by name (e.g. ``lambda name: name.startswith("head.")``);
            None (default) trains all of them. The others keep their values (buffers such as
            BatchNorm statistics still update in training mode).
        batches: this stage's batches per epoch; None (default) uses the schedule's.
        name: the stage's checkpoint sub-folder (and fingerprint part); "" (default) is the
            run's own folder, as a one-stage run uses.
        width: the output width this stage trains, if it has one: shown in the progress bar
            and recorded as ``stage_width`` in each history record.
        seed_offset: the stage's AdamW/numpy/torch seeding is ``train.seed + seed_offset``.
        start: called before the stage trains (e.g. to initialise the stage's new layer from
            what the previous stage kept); a resumed stage's checkpoint then overrides its effect.
    """

    epochs: int
    step: StepFn
    trains: ParameterFilter | None = None
    batches: EpochBatches | None = None
    name: str = ""
    width: int | None = None
    seed_offset: int = 0
    start: Callable[[], None] | None = None


def train_stages(module: torch.nn.Module, stages: Sequence[Stage], epoch_batches: EpochBatches,
                 config: TrainConfig, validate: Callable[[], float] | None = None, desc: str = "train",
                 checkpoint: Callable[[Stage], Checkpointing | None] | None = None) -> History:
    """Run ``stages`` in order on ``module``, each one :func:`train_adapter` call; return the history.

    Each stage gets a fresh AdamW and ``config`` with the stage's ``epochs`` and seed
    ``config.seed + stage.seed_offset``; model selection, when on, applies within each stage
    (each stage starts from the weights the previous one kept). History records number epochs
    across stages and carry ``stage_width`` when the stage has a width; ``history.selections``
    holds each stage's :class:`Selection`. ``checkpoint(stage)`` gives each stage's checkpointing.
    """
    history = History()
    for stage in stages:
        if stage.start is not None:
            stage.start()
        stage_config = replace(config, epochs=stage.epochs, seed=config.seed + stage.seed_offset)
        records = train_adapter(module, stage.step, stage.batches or epoch_batches, stage_config, validate,
                                desc=desc if stage.width is None else f"{desc} {stage.width}d",
                                checkpoint=checkpoint(stage) if checkpoint is not None else None,
                                trains=stage.trains)
        done = len(history)
        width = {} if stage.width is None else {"stage_width": stage.width}
        history += [{**record, "epoch": done + record["epoch"], **width} for record in records]
        history.selections += records.selections
    return history


def train_adapter(module: torch.nn.Module, step: StepFn, epoch_batches: EpochBatches,
                  config: TrainConfig, validate: Callable[[], float] | None = None,
                  desc: str = "train", checkpoint: Checkpointing | None = None,
                  trains: ParameterFilter | None = None) -> History:
    """Train ``module`` in place; return one record per epoch (and the :class:`Selection` made).

    Each record holds ``epoch``, ``seconds``, the batch-size-weighted mean of every loss part
    the step returned, ``active_ratio`` when the step counts active triplets, and
    ``val_ndcg@10`` when ``validate`` is given and ``config.selection`` is ``validation``: then
    the start is scored too, the best-scoring weights are kept (ties: the earlier) and training
    stops after ``config.patience`` epochs without gain. With ``checkpoint``, the state is saved after
    every epoch and, with ``checkpoint.resume``, training continues after the saved epoch.
    With ``trains``, only the parameters it selects train (see :class:`Stage`).
    """
    if trains is None:
        return _train(module, step, epoch_batches, config, validate, desc, checkpoint, module.parameters())
    frozen = [parameter for name, parameter in module.named_parameters() if not trains(name)]
    trained = [parameter for name, parameter in module.named_parameters() if trains(name)]
    if not trained:
        raise DiveError(f"{desc}: the stage's parameter filter selects no parameter to train")
    flags = [parameter.requires_grad for parameter in frozen]
    for parameter in frozen:
        parameter.requires_grad_(False)
    try:
        return _train(module, step, epoch_batches, config, validate, desc, checkpoint, trained)
    finally:
        for parameter, flag in zip(frozen, flags):
            parameter.requires_grad_(flag)


def _train(module: torch.nn.Module, step: StepFn, epoch_batches: EpochBatches, config: TrainConfig,
           validate: Callable[[], float] | None, desc: str, checkpoint: Checkpointing | None,
           parameters: Iterable[torch.nn.Parameter]) -> History:
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    module.to(device)
    optimizer = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)
    state = _LoopState(history=[])
    if config.selection != "validation":
        validate = None
    if checkpoint is not None and checkpoint.resume and checkpoint.exists:
        state = _restore_checkpoint(checkpoint, module, optimizer, rng, device)
        log.info("%s: resumed after epoch %d from %s", desc, len(state.history), checkpoint.directory)
    else:
        if checkpoint is not None:
            checkpoint.discard()  # starting over: an older run's checkpoints would be resumed or overwritten
        if validate is not None:
            module.eval()
            state.start_score = float(validate())
            _keep_if_better(state, state.start_score, 0, module)
    history = state.history
    first_epoch = len(history) + 1
    bar = tqdm(range(first_epoch, config.epochs + 1 if not state.stopped else first_epoch), desc=desc,
               disable=not config.progress, unit="epoch", initial=first_epoch - 1, total=config.epochs)
    for epoch in bar:
        started = time.perf_counter()
        module.train()
        record = _run_epoch(module, step, epoch_batches(rng), optimizer, device, f"{desc}, epoch {epoch}")
        _check_finite_weights(module, f"{desc}, epoch {epoch}")
        record = {"epoch": epoch, **record}
        if validate is not None:
            module.eval()
            record["val_ndcg@10"] = float(validate())
            _keep_if_better(state, record["val_ndcg@10"], epoch, module)
            state.stopped = 0 < config.patience <= state.epochs_without_gain
        record["seconds"] = time.perf_counter() - started
        history.append(record)
        bar.set_postfix({k: f"{v:.4f}" for k, v in record.items() if k in ("loss", "active_ratio", "val_ndcg@10")})
        if checkpoint is not None:
            _save_checkpoint(checkpoint, module, optimizer, rng, state)
        if state.stopped:
            break
    if validate is not None:
        module.load_state_dict(state.best_state)
    module.eval()
    selection = _selection(state, config, validate is not None)
    if validate is not None:
        log.info("%s: %s (validation nDCG@10 %.4f)", desc, selection.describe(), state.best_score)
    return History(history, [selection])


def _keep_if_better(state: _LoopState, score: float, epoch: int, module: torch.nn.Module) -> None:
    """Keep ``module``'s weights as the best when ``score`` beats the best so far (ties keep the earlier)."""
    if score > state.best_score:
        state.best_score, state.best_state, state.kept_epoch = score, copy.deepcopy(module.state_dict()), epoch
        state.epochs_without_gain = 0
    else:
        state.epochs_without_gain += 1


def _selection(state: _LoopState, config: TrainConfig, validated: bool) -> Selection:
    if not validated:
        return Selection("last", kept_epoch=len(state.history), epochs_run=len(state.history))
    return Selection("validation", state.kept_epoch, len(state.history), config.patience, state.start_score,
                     state.best_score)


def _save_checkpoint(checkpoint: Checkpointing, module: torch.nn.Module, optimizer: torch.optim.Optimizer,
                     rng: np.random.Generator, state: _LoopState) -> None:
    optimizer_state = optimizer.state_dict()
    tensors = {f"module.{name}": tensor for name, tensor in module.state_dict().items()}
    for index, values in optimizer_state["state"].items():
        tensors.update({f"optimizer.{index}.{name}": value for name, value in values.items()})
    tensors.update({f"best.{name}": tensor for name, tensor in (state.best_state or {}).items()})
    tensors.update({f"extra.{name}": tensor for name, tensor in checkpoint.extra_state().items()})
    tensors["torch_rng"] = torch.get_rng_state()
    tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in tensors.items()}
    directory = Path(checkpoint.directory)
    directory.mkdir(parents=True, exist_ok=True)
    for leftover in directory.iterdir():  # from a run killed while saving
        if _is_scratch(leftover):
            shutil.rmtree(leftover, ignore_errors=True)
    scratch = Path(tempfile.mkdtemp(prefix=SCRATCH_PREFIX, dir=directory))
    write_saved(scratch, CHECKPOINT_FORMAT, CHECKPOINT_TENSORS, torch_payload(tensors),
                {"fingerprint": checkpoint.fingerprint, "epoch": len(state.history), "history": state.history,
                 "numpy_rng": rng.bit_generator.state, "param_groups": optimizer_state["param_groups"],
                 "best_score": state.best_score if state.best_state is not None else None,
                 "kept_epoch": state.kept_epoch, "start_score": state.start_score,
                 "epochs_without_gain": state.epochs_without_gain, "stopped": state.stopped})
    target = directory / f"epoch-{len(state.history):05d}"
    if _is_checkpoint(target):  # os.replace cannot rename onto a folder that is not empty
        shutil.rmtree(target)
    elif target.exists() or target.is_symlink():
        shutil.rmtree(scratch)
        raise DiveError(f"{target}: is in the way of a checkpoint and is not one of dive's; move it away")
    os.replace(scratch, target)
    checkpoint.discard(keep=target)


def _restore_checkpoint(checkpoint: Checkpointing, module: torch.nn.Module, optimizer: torch.optim.Optimizer,
                        rng: np.random.Generator, device: torch.device) -> _LoopState:
    record, tensors = read_saved(checkpoint.saved_epochs()[-1], CHECKPOINT_FORMAT, CHECKPOINT_TENSORS,
                                 load_tensors_bytes)
    if record.get("fingerprint") != checkpoint.fingerprint:
        raise DiveError(f"{checkpoint.directory}: the checkpoint was made with other settings or data; "
                        "rerun without --resume (or use the original settings)")
    groups: dict[str, dict[str, torch.Tensor]] = defaultdict(dict)
    for name, tensor in tensors.items():
        prefix, _, rest = name.partition(".")
        groups[prefix][rest] = tensor
    try:
        module.load_state_dict(groups["module"])
        optimizer.load_state_dict({"state": _optimizer_state(groups["optimizer"], device),
                                   "param_groups": record["param_groups"]})
    except (RuntimeError, ValueError, KeyError) as error:
        raise DiveError(f"{checkpoint.directory}: checkpoint does not fit this model ({str(error).splitlines()[0]})") from None
    rng.bit_generator.state = record["numpy_rng"]
    torch.set_rng_state(tensors["torch_rng"])
    checkpoint.restore_extra(groups["extra"])
    best_state = {name: tensor.to(device) for name, tensor in groups["best"].items()} or None
    best_score = record["best_score"] if record.get("best_score") is not None else -np.inf
    return _LoopState(list(record["history"]), best_score, best_state, int(record["kept_epoch"]),
                      record["start_score"], int(record["epochs_without_gain"]), bool(record["stopped"]))


def _optimizer_state(flat: dict[str, torch.Tensor], device: torch.device) -> dict[int, dict[str, Any]]:
    state: dict[int, dict[str, Any]] = defaultdict(dict)
    for name, tensor in flat.items():
        index, _, key = name.partition(".")
        # AdamW keeps its step count on the cpu; moments live with the parameters.
        state[int(index)][key] = tensor if key == "step" else tensor.to(device)
    return dict(state)


def _run_epoch(module: torch.nn.Module, step: StepFn, batches: Iterable[Batch],
               optimizer: torch.optim.Optimizer, device: torch.device, where: str = "train") -> dict[str, float]:
    sums: dict[str, float] = defaultdict(float)
    n_samples = 0
    for batch in batches:
        batch = tuple(tensor.to(device, non_blocking=True) for tensor in batch)
        parts = step(batch)
        values = {name: float(value.detach()) for name, value in parts.items()}
        _check_finite_loss(values, where)  # before the step: it would spread NaN into every weight
        optimizer.zero_grad(set_to_none=True)
        parts["loss"].backward()
        optimizer.step()
        size = batch[0].shape[0]
        n_samples += size
        for name, value in values.items():
            # n_active is a count; every other part is a batch mean, weighted by batch size here.
            sums[name] += value * (1 if name == "n_active" else size)
    if n_samples == 0:
        raise DiveError("an epoch had no training batch: the training set is empty or smaller than 2")
    record = {name: total / n_samples for name, total in sums.items() if name != "n_active"}
    if "n_active" in sums:
        record["active_ratio"] = sums["n_active"] / n_samples
    return record


def _check_finite_loss(values: dict[str, float], where: str) -> None:
    bad = [f"{name} = {value}" for name, value in values.items() if not math.isfinite(value)]
    if bad:
        raise NonFiniteError(f"{where}: the training loss is not finite ({', '.join(bad)}); training stopped "
                             "(try a smaller --lr or smaller loss weights)")


def _check_finite_weights(module: torch.nn.Module, where: str) -> None:
    bad = [name for name, tensor in module.state_dict().items()
           if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())]
    if bad:
        raise NonFiniteError(f"{where}: the weights became NaN or infinite ({bad[0]}) although the loss was finite; "
                             "training stopped (try a smaller --lr)")
