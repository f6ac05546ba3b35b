"""The one interface every compression method implements (scikit-learn shape).

``fit(train_set) -> self``, ``transform(vectors) -> vectors``, ``save(dir)``, ``load(dir)``.
A saved method is a folder holding ``config.json`` (method name, dive version, typed config,
input dim, SHA-256 of the weights) and ``weights.safetensors``: loading never runs code.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Iterator, Literal

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load as load_tensors_bytes
from torch import nn

from dive.config import from_dict, to_dict
from dive.data.sets import TrainSet, check_vectors
from dive.errors import DiveError, short_repr
from dive.evaluate import evaluate_method
from dive.train import (Batch, Checkpointing, History, Stage, TrainConfig, batch_slices, result_settings,
                        train_stages)
from dive.saved import CONFIG_FILE, read_saved, torch_payload, write_saved

FORMAT = "dive-method/1"
WEIGHTS_FILE = "weights.safetensors"
TRANSFORM_BATCH = 4096
"""Rows per forward pass in ``transform``: large enough for full-speed matmuls, small in memory."""


LinearLayer = tuple[torch.Tensor, torch.Tensor, bool]
"""One ``activation(x @ weight.T + bias)`` step: (weight [out, in], bias [out], ReLU after it?)."""


class LinearChain(nn.Module):
    """``norm(step_n(... step_1(x)))`` with ``step = [ReLU](x @ weight.T + bias)``: the torch form of
    :meth:`Method.linear_layers`, used for exports and fast inference."""

    def __init__(self, layers: list[LinearLayer]):
        super().__init__()
        steps: list[nn.Module] = []
        for weight, bias, relu in layers:
            # skip_init: the weights are copied in next, so torch's random init would be wasted work.
            linear = torch.nn.utils.skip_init(nn.Linear, weight.shape[1], weight.shape[0])
            with torch.no_grad():
                linear.weight.copy_(weight)
                linear.bias.copy_(bias)
            steps.extend([linear, nn.ReLU()] if relu else [linear])
        self.net = nn.Sequential(*steps)

    def forward(self, vectors: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net(vectors), dim=1)


class AdapterEncoder(nn.Module):
    """A torch adapter's :meth:`TorchAdapter.encode` as a module (for maps that are not linear chains)."""

    def __init__(self, adapter: "TorchAdapter"):
        super().__init__()
        self.module = adapter.module
        self._encode = adapter.encode

    def forward(self, vectors: torch.Tensor) -> torch.Tensor:
        return self._encode(vectors)


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, np.finfo(np.float32).tiny)).astype(np.float32, copy=False)


Role = Literal["reference", "baseline", "main", "ablation"]
"""What a method is in a comparison; see :attr:`Method.role`."""


@dataclass(frozen=True)
class Citation:
    """The paper a method comes from, as ``dive methods`` prints it.

    Attributes:
        title: the paper's title.
        authors: its authors (``Yoon et al.`` for more than two).
        venue: where and when it appeared (``EMNLP 2024``), or ``preprint``.
        note: which part of the paper, or how dive implements it (optional).
    """

    title: str
    authors: str
    venue: str
    note: str = ""

    def __str__(self) -> str:
        return f'{self.authors}, "{self.title}", {self.venue}' + (f" ({self.note})" if self.note else "")


class Method(ABC):
    """Base class of all compression methods. Subclasses set the class attributes and ``Config``.

    The class attributes below are the method's metadata: the registry
    (:data:`dive.methods.REGISTRY`), the CLI, the grid, the reports and the figures read them,
    so a new method needs no change anywhere else.
    """

    name: ClassVar[str]
    """Registry key, ``--method`` value and the method's column in reports (e.g. ``dive``)."""
    summary: ClassVar[str]
    """One line on what the method does, printed by ``dive methods``."""
    citation: ClassVar[Citation | None] = None
    """The paper the method comes from (None: no paper, e.g. ``frozen``)."""
    Config: ClassVar[type]
    """The typed settings dataclass; its defaults are the paper's."""
    role: ClassVar[Role] = "baseline"
    """Where reports place the method: ``reference`` (the full-dimension yardstick every table
    compares against, no column of its own: ``frozen``), ``baseline`` (a column of the nDCG,
    Recall, retention and time tables, and of the unsupervised table when not ``supervised``),
    ``main`` (the toolkit's own method: a column of every table, the thick line in figures, its
    training dynamics plotted and the win/loss summary written about it) or ``ablation`` (the
    ``ablates`` method with a part removed: the ablation, retention and time tables)."""
    ablates: ClassVar[str | None] = None
    """For ``role = "ablation"``: the name of the method it ablates (e.g. ``dive``)."""
    trains: ClassVar[bool] = False
    """True when ``fit`` runs a training loop (a :class:`TorchAdapter`): the method takes
    training settings (``Config.train``: epochs, device, seed) and records per-epoch history."""
    supervised: ClassVar[bool] = True
    """True when ``fit`` needs labelled query-document pairs (triplets); False when it fits on
    the corpus alone (or on nothing). An instance may refine it from its config
    (Matryoshka-Adaptor's ``unsupervised_only``); the class value is what reports use."""
    search_space: ClassVar[dict[str, list[Any]]] = {}
    """Settings ``dive tune`` and ``dive reproduce --tune`` search on the validation slice, each with
    its choices (:mod:`dive.experiments.tune`); empty for methods without labels to tune on."""
    tunable: ClassVar[bool] = False
    """True when the method has a :attr:`search_space` (set from it for every subclass)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.tunable = bool(cls.search_space)

    def __init__(self, config: Any | None = None, **overrides: Any):
        base = config if config is not None else self.Config()
        self.config = from_dict(self.Config, overrides, base) if overrides else base
        self.input_dim: int | None = None
        self.history = History()
        """Per-epoch training records and the model selection made (empty for methods that do not train)."""

    @classmethod
    def default_config(cls, dataset: str | None = None) -> Any:
        """The paper's defaults, possibly specific to ``dataset`` (see DIVE's Table 8)."""
        return cls.Config()

    @classmethod
    def protocol_settings(cls, protocol: str) -> dict[str, Any]:
        """Settings the evaluation ``protocol`` implies, as overrides (a run's own overrides win).

        ``paper`` reproduces the DIVE paper's tables, so methods that train keep the last of the
        paper's fixed epochs (its Section 4.1; SPEC "Protocols"); ``heldout`` keeps every default.
        """
        return {"train": {"selection": "last"}} if protocol == "paper" and cls.trains else {}

    @property
    def output_dim(self) -> int:
        return int(self.config.dim)

    @property
    def is_fitted(self) -> bool:
        return self.input_dim is not None

    def check_fitted(self, action: str) -> None:
        if not self.is_fitted:
            raise DiveError(f"{self.name}: {action}, the method is not fitted (call fit() or load a fitted one)")

    def fit(self, train_set: TrainSet) -> "Method":
        if self.supervised and train_set.n_triplets == 0:
            raise DiveError(f"{self.name} needs labelled query-document pairs, and the training set has none")
        self._check_target_dim(train_set.dim)
        self.input_dim = train_set.dim
        self._fit(train_set)
        return self

    def transform(self, vectors: np.ndarray) -> np.ndarray:
        """Compress ``[n, input_dim]`` vectors to ``[n, output_dim]`` unit vectors (float32)."""
        self.check_fitted("cannot transform")
        vectors = check_vectors(vectors, "vectors to transform", dim=self.input_dim)
        return self._transform(vectors)

    def _check_target_dim(self, input_dim: int) -> None:
        if not 1 <= self.output_dim <= input_dim:
            raise DiveError(f"{self.name}: target dim {self.output_dim} must be between 1 and the input dim {input_dim}")

    @abstractmethod
    def _fit(self, train_set: TrainSet) -> None: ...

    @abstractmethod
    def _transform(self, vectors: np.ndarray) -> np.ndarray: ...

    def tensors(self) -> dict[str, torch.Tensor]:
        """Fitted state to save (empty for stateless methods)."""
        return {}

    def linear_layers(self) -> list[LinearLayer] | None:
        """The inference map as ``[(weight [out, in], bias [out], relu?)]`` followed by L2
        normalisation, or None when it is not such a chain (e.g. residual adapters).

        Lets exports use only standard building blocks (sentence-transformers' Dense + Normalize).
        """
        return None

    def inference_module(self) -> nn.Module:
        """``transform`` as an eval-mode torch module, ``[n, input_dim] -> [n, output_dim]`` unit rows,
        for exports (ONNX, sentence-transformers) and batched inference."""
        self.check_fitted("nothing to export")
        layers = self.linear_layers()
        if layers is None:
            raise DiveError(f"{self.name}: has no torch form to export")
        return LinearChain(layers).eval()

    def load_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Restore the fitted state from :meth:`tensors`' output."""

    def save(self, directory: str | Path) -> Path:
        """Write ``config.json`` + ``weights.safetensors`` into ``directory``, each atomically."""
        self.check_fitted("nothing to save")
        tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in self.tensors().items()}
        name = _non_finite(tensors)
        if name is not None:
            raise DiveError(f"{self.name}: weights {name!r} hold NaN or infinite values; not saved (training diverged?)")
        return write_saved(directory, FORMAT, WEIGHTS_FILE,
                           torch_payload(tensors, metadata={"format": FORMAT, "method": self.name}),
                           {"method": self.name, "input_dim": self.input_dim, "output_dim": self.output_dim,
                            "config": to_dict(self.config)})

    @classmethod
    def from_saved(cls, record: dict[str, Any], tensors: dict[str, torch.Tensor],
                   directory: str | Path = "") -> "Method":
        """The method held by a verified saved folder (``record`` and ``tensors`` from :func:`read_method_folder`).

        Every field is type-checked before use, and the weights must be finite and fit the
        config exactly: a refusal is one DiveError naming ``directory``'s ``config.json``.
        """
        where = Path(directory) / CONFIG_FILE
        try:
            method = cls(from_dict(cls.Config, record.get("config")))
        except DiveError as error:
            raise DiveError(f"{where}: {error}") from None
        input_dim = record.get("input_dim")
        if isinstance(input_dim, bool) or not isinstance(input_dim, int) or input_dim < 1:
            raise DiveError(f"{where}: 'input_dim' must be a positive integer, got {short_repr(input_dim)}")
        try:
            method._check_target_dim(input_dim)
        except DiveError as error:
            raise DiveError(f"{where}: {error}") from None
        method.input_dim = input_dim
        if record.get("output_dim") != method.output_dim:
            raise DiveError(f"{where}: 'output_dim' {short_repr(record.get('output_dim'))} does not match the "
                            f"{method.output_dim} its config gives")
        name = _non_finite(tensors)
        if name is not None:
            raise DiveError(f"{where.parent / WEIGHTS_FILE}: weights {name!r} hold NaN or infinite values; "
                            "refused (training diverged?)")
        try:
            method.load_tensors(tensors)
        except DiveError as error:
            raise DiveError(f"{where.parent}: {error}") from None
        return method


def _non_finite(tensors: dict[str, torch.Tensor]) -> str | None:
    """The name of the first floating-point tensor holding NaN or inf (every vector it touched would be NaN)."""
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            return name
    return None


def read_method_folder(directory: str | Path, config_sha256: str | None = None, config_mismatch: str = ""
                       ) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Read and verify a saved method folder (see :mod:`dive.saved`); with ``config_sha256``, its
    ``config.json`` must have that checksum (refused with ``config_mismatch`` otherwise)."""
    return read_saved(directory, FORMAT, WEIGHTS_FILE, load_tensors_bytes, config_sha256, config_mismatch)


class TorchAdapter(Method):
    """A method whose fitted state is one ``torch.nn.Module`` trained by :func:`dive.train.train_stages`.

    Subclasses implement :meth:`build` (the module for an input dim), :meth:`step` (the loss
    parts of one batch) and, when the output is not simply ``module(x)``, :meth:`encode`. The
    default batches are triplets ``(q, p, n)`` of frozen vectors with negatives re-drawn each
    epoch; unsupervised adapters override :meth:`epoch_batches`. Staged training (e.g. SMEC's
    widths) overrides :meth:`stages`; the default is one stage of ``train.epochs`` epochs.
    """

    trains = True
    module: torch.nn.Module
    checkpoint_dir: Path | None = None
    resume: bool = False

    @property
    def train_config(self) -> TrainConfig:
        return self.config.train

    def checkpoint_to(self, directory: str | Path | None, resume: bool = False) -> "TorchAdapter":
        """Save training state to ``directory`` after every epoch; with ``resume``, continue from it.

        A resumed fit (same settings, data and device) ends with the same weights as an
        uninterrupted one. Returns ``self``.
        """
        self.checkpoint_dir = Path(directory) if directory is not None else None
        self.resume = resume
        return self

    def checkpointing(self, train_set: TrainSet, part: str = "") -> Checkpointing | None:
        """The :class:`~dive.train.Checkpointing` of this fit (``part`` names a sub-run, e.g. a stage)."""
        if self.checkpoint_dir is None:
            return None
        settings = json.dumps({"method": self.name, "config": result_settings(to_dict(self.config)), "part": part},
                              sort_keys=True)
        fingerprint = hashlib.sha256(settings.encode() + train_set.fingerprint().encode()).hexdigest()
        return Checkpointing(self.checkpoint_dir / part if part else self.checkpoint_dir, self.resume, fingerprint)

    @abstractmethod
    def build(self, input_dim: int) -> torch.nn.Module: ...

    @abstractmethod
    def step(self, batch: Batch) -> dict[str, torch.Tensor]: ...

    def stages(self, train_set: TrainSet) -> list[Stage]:
        """The training schedule: by default one stage of ``train.epochs`` epochs of :meth:`step`
        on every parameter, checkpointed in the run's own folder."""
        return [Stage(epochs=self.train_config.epochs, step=self.step)]

    def encode(self, vectors: torch.Tensor) -> torch.Tensor:
        """Inference output for a batch of frozen vectors (unit rows of ``output_dim``)."""
        return self.module(vectors)

    def inference_module(self) -> nn.Module:
        """The linear chain when there is one (BatchNorm folded, unused heads dropped), else ``encode``."""
        self.check_fitted("nothing to export")
        if self.linear_layers() is None:
            return AdapterEncoder(self).eval()
        return super().inference_module()

    def epoch_batches(self, train_set: TrainSet, rng: np.random.Generator) -> Iterator[Batch]:
        """One epoch's batches: by default :meth:`triplet_batches`."""
        return self.triplet_batches(train_set, rng)

    def triplet_batches(self, train_set: TrainSet, rng: np.random.Generator) -> Iterator[Batch]:
        """Shuffled ``(q, p, n)`` batches of frozen vectors, negatives re-drawn."""
        queries = torch.from_numpy(train_set.query_vectors)
        docs = torch.from_numpy(train_set.doc_vectors)
        triplets = torch.from_numpy(train_set.triplets(rng))
        for rows in batch_slices(len(triplets), self.train_config.batch_size, rng):
            chosen = triplets[torch.from_numpy(rows)]
            yield queries[chosen[:, 0]], docs[chosen[:, 1]], docs[chosen[:, 2]]

    def triplets_with_corpus(self, train_set: TrainSet, rng: np.random.Generator) -> Iterator[Batch]:
        """``(q, p, n, corpus)``: each triplet batch paired with as many corpus vectors, which walk through
        a fresh permutation of the whole corpus each epoch (wrapping around), for unsupervised terms
        trained beside the ranking loss."""
        docs = torch.from_numpy(train_set.doc_vectors)
        batch_size = self.train_config.batch_size
        order = torch.from_numpy(rng.permutation(len(docs)))
        offsets = torch.arange(batch_size)
        for index, (queries, positives, negatives) in enumerate(self.triplet_batches(train_set, rng)):
            rows = order[(index * batch_size + offsets[:len(queries)]) % len(docs)]
            yield queries, positives, negatives, docs[rows]

    def corpus_batches(self, train_set: TrainSet, rng: np.random.Generator) -> Iterator[Batch]:
        """Shuffled ``(docs,)`` batches of corpus vectors, for unsupervised objectives."""
        docs = torch.from_numpy(train_set.doc_vectors)
        for rows in batch_slices(len(docs), self.train_config.batch_size, rng):
            yield (docs[torch.from_numpy(rows)],)

    def _fit(self, train_set: TrainSet) -> None:
        torch.manual_seed(self.train_config.seed)
        self.module = self.build(train_set.dim)
        validate = None
        if train_set.validation is not None and self.supervised:  # an unsupervised method uses no labels at all
            validate = lambda: evaluate_method(self, train_set.validation)["ndcg@10"]  # noqa: E731
        self.history = train_stages(self.module, self.stages(train_set), lambda rng: self.epoch_batches(train_set, rng),
                                    self.train_config, validate, desc=f"train {self.name}",
                                    checkpoint=lambda stage: self.checkpointing(train_set, part=stage.name))

    @torch.inference_mode()
    def _transform(self, vectors: np.ndarray) -> np.ndarray:
        """Through :meth:`inference_module`: for DIVE, head 1 alone with BatchNorm folded, which
        skips the other heads' FLOPs (the same map up to float rounding)."""
        was_training = self.module.training
        self.module.eval()
        device = next(self.module.parameters()).device
        inference = self.inference_module().to(device)
        outputs = [inference(torch.from_numpy(vectors[start:start + TRANSFORM_BATCH]).to(device)).cpu()
                   for start in range(0, len(vectors), TRANSFORM_BATCH)]
        self.module.train(was_training)
        return torch.cat(outputs).numpy().astype(np.float32, copy=False)

    def tensors(self) -> dict[str, torch.Tensor]:
        return dict(self.module.state_dict())

    def load_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        self._check_shapes(tensors)
        self.module = self.build(self.input_dim)
        try:
            self.module.load_state_dict(tensors)
        except RuntimeError as error:
            raise DiveError(f"{self.name}: saved weights do not fit the saved config ({str(error).splitlines()[0]})") from None
        self.module.eval()

    def _check_shapes(self, tensors: dict[str, torch.Tensor]) -> None:
        """Refuse weights whose names or shapes differ from the module the config describes, before
        building it: the module is first built on torch's ``meta`` device, which allocates nothing,
        so a config asking for a huge module (``hidden`` = 10^12) is refused instead of allocated."""
        try:
            with torch.device("meta"):
                module = self.build(self.input_dim)
        except (RuntimeError, ValueError, TypeError, OverflowError) as error:
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise DiveError(f"{self.name}: the saved config describes no valid model ({reason})") from None
        expected = {name: tuple(tensor.shape) for name, tensor in module.state_dict().items()}
        saved = {name: tuple(tensor.shape) for name, tensor in tensors.items()}
        if saved != expected:
            different = sorted(set(saved) ^ set(expected)) or [n for n in sorted(saved) if saved[n] != expected[n]]
            raise DiveError(f"{self.name}: saved weights do not fit the saved config ({different[0]!r}: saved "
                            f"{saved.get(different[0])}, config gives {expected.get(different[0])})")
