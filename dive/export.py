"""Export a fitted pipeline for the systems people use.

``onnx``: the method's inference map (``[n, input_dim]`` frozen vectors in, ``[n, dim]`` unit
vectors out, any batch size) as one ONNX graph, checked against the pipeline's own output with
ONNX Runtime before the file is kept.

``sentence-transformers``: a copy of the frozen model folder with the fitted pipeline appended,
so ``SentenceTransformer(path).encode(texts)`` returns what the pipeline stores: the fitted
codec's codes (:class:`DiveCodec`), or the compressed float vectors without a codec. The
folder's README.md is replaced by a model card written from the pipeline's recorded facts
(base model, method, dim, codec, bytes per vector, the measured metrics and their protocol),
and the folder must be the pipeline's base model. Exporting imports nothing from
sentence-transformers: Dense folders are written in the layout every version from 3.0 reads.

* Methods whose inference is a chain of linear layers with ReLUs (dive and its ablations,
  pca, truncate, autoencoder; see ``Method.linear_layers``) are appended as standard
  ``Dense`` modules plus ``Normalize``: the folder loads anywhere sentence-transformers is
  installed, with no custom code.
* Residual adapters (matryoshka-adaptor, search-adaptor, smec) are appended as
  :class:`DiveAdapter`, which needs ``dive`` installed and
  ``SentenceTransformer(path, trust_remote_code=True)``; the method folder it reads is JSON +
  safetensors, checksum verified.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from safetensors.torch import save_file

from dive.encode import model_digest
from dive.errors import DiveError
from dive.identity import ModelIdentity
from dive.methods import Method, load_method
from dive.model_card import model_card
from dive.pipeline import Pipeline
from dive.quantize import Codec, load_codec
from dive.utils import atomic_path, require

MODULE_FOLDER = "dive_adapter"
CODEC_FOLDER = "dive_codec"
TRUNCATE_FOLDER = "dive_truncate"
CARD_FILE = "README.md"
FLOAT_OUTPUT = "float_embedding"
"""With a codec module, the features key that keeps the float vectors (``encode(..., output_value=...)``)."""
ST_DENSE = "sentence_transformers.models.Dense"
ST_NORMALIZE = "sentence_transformers.models.Normalize"
"""Module types as modules.json names them: these paths resolve in every sentence-transformers from 3.0
(6.x keeps them as aliases of ``sentence_transformer.modules``), so a folder exported under one version
loads under the others."""
ACTIVATIONS = {True: "torch.nn.modules.activation.ReLU", False: "torch.nn.modules.linear.Identity"}
"""A Dense layer's ``activation_function`` as its config.json names it, by whether it has a ReLU."""
ST_CONFIG = "config_sentence_transformers.json"
PROMPT_NAMES = {"query_prompt": "query", "doc_prompt": "document"}
"""The names under which an exported model's ``prompts`` hold the pipeline's prompts."""
ONNX_OPSET = 18
ONNX_TOLERANCE = 1e-5
"""Largest absolute difference allowed between ONNX Runtime's and the pipeline's output."""
ONNX_CHECK_ROWS = 256


class DiveAdapter(torch.nn.Module):
    """sentence-transformers module: replaces ``sentence_embedding`` by the method's output."""

    def __init__(self, method: Method):
        super().__init__()
        self.method = method
        self.inference = method.inference_module()

    def forward(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        features["sentence_embedding"] = self.inference(features["sentence_embedding"].float())
        return features

    def get_sentence_embedding_dimension(self) -> int:
        return self.method.output_dim

    get_embedding_dimension = get_sentence_embedding_dimension  # sentence-transformers 6's name

    def save(self, output_path: str, *args, **kwargs) -> None:
        self.method.save(output_path)

    @staticmethod
    def load(input_path: str) -> "DiveAdapter":
        return DiveAdapter(load_method(input_path))


class DiveCodec(torch.nn.Module):
    """sentence-transformers module: ``sentence_embedding`` becomes the fitted codec's codes, exactly as
    ``codec.encode`` stores them (uint8 for int8, binary and pq; float16 for float16); the float vectors
    stay under ``features[FLOAT_OUTPUT]`` for asymmetric search (float queries against stored codes)."""

    def __init__(self, codec: Codec):
        super().__init__()
        self.codec = codec

    def forward(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        vectors = features["sentence_embedding"]
        codes = self.codec.encode(vectors.detach().float().cpu().numpy())
        features[FLOAT_OUTPUT] = vectors
        features["sentence_embedding"] = torch.from_numpy(codes).to(vectors.device)
        return features

    def get_sentence_embedding_dimension(self) -> int:
        return self.codec.code_width

    get_embedding_dimension = get_sentence_embedding_dimension  # sentence-transformers 6's name

    def save(self, output_path: str, *args, **kwargs) -> None:
        self.codec.save(output_path)

    @staticmethod
    def load(input_path: str) -> "DiveCodec":
        return DiveCodec(load_codec(input_path))


@dataclass(frozen=True)
class ExportConfig:
    """What ``dive export`` writes into a sentence-transformers folder.

    Attributes:
        truncate_dim: keep the first ``truncate_dim`` dims of the method's output, re-normalised
            (Matryoshka-style prefixes; measured only at the full width). None = the full output.
        codec: append the pipeline's fitted codec, so ``encode()`` returns the stored codes. Default
            True: the folder then stores what the pipeline stores and the card's bytes per vector hold.
    """

    truncate_dim: int | None = None
    codec: bool = True


@dataclass(frozen=True)
class StModule:
    """One module to append: its folder in the export, its modules.json type, and how to write the folder."""

    folder: str
    type: str
    write: Callable[[Path], None]


def _dense(weight: torch.Tensor, bias: torch.Tensor, relu: bool) -> Callable[[Path], None]:
    """A writer of sentence-transformers' Dense folder (config.json + model.safetensors) in the layout every
    version from 3.0 reads, so exporting imports nothing version-specific."""
    def write(folder: Path) -> None:
        config = {"in_features": int(weight.shape[1]), "out_features": int(weight.shape[0]), "bias": True,
                  "activation_function": ACTIVATIONS[relu]}
        (folder / "config.json").write_text(json.dumps(config))
        save_file({"linear.weight": weight.detach().float().contiguous(),
                   "linear.bias": bias.detach().float().contiguous()}, str(folder / "model.safetensors"))
    return write


def _nothing(folder: Path) -> None:
    """Normalize has no state: its folder stays empty."""


def _method_modules(method: Method) -> list[StModule]:
    """Modules that reproduce ``method.transform``: Dense layers + Normalize, or the dive adapter."""
    layers = method.linear_layers()
    if layers is None:
        adapter = DiveAdapter(method)
        return [StModule(MODULE_FOLDER, f"{DiveAdapter.__module__}.DiveAdapter",
                         lambda folder: adapter.save(str(folder)))]
    modules = [StModule(f"dive_dense_{index}", ST_DENSE, _dense(weight, bias, relu))
               for index, (weight, bias, relu) in enumerate(layers)]
    return modules + [StModule("dive_normalize", ST_NORMALIZE, _nothing)]


def _truncate_modules(dim: int, truncate_dim: int) -> list[StModule]:
    """The first ``truncate_dim`` of ``dim`` components (an exact 0/1 Dense), then Normalize."""
    slicer = torch.eye(dim)[:truncate_dim]
    return [StModule(TRUNCATE_FOLDER, ST_DENSE, _dense(slicer, torch.zeros(truncate_dim), relu=False)),
            StModule(f"{TRUNCATE_FOLDER}_normalize", ST_NORMALIZE, _nothing)]


def appended_modules(pipeline: Pipeline, config: ExportConfig = ExportConfig()) -> list[StModule]:
    """Everything appended after the frozen model: the method, the truncation, the codec (as configured)."""
    modules = _method_modules(pipeline.method)
    if config.truncate_dim is not None:
        _check_truncation(pipeline, config)
        modules += _truncate_modules(pipeline.method.output_dim, config.truncate_dim)
    if config.codec and pipeline.codec is not None:
        modules.append(_codec_module(pipeline.codec))
    return modules


def _check_truncation(pipeline: Pipeline, config: ExportConfig) -> None:
    """Refuse a ``truncate_dim`` outside ``[1, dim)``, or one with a codec fitted at the full width."""
    dim, truncate_dim = pipeline.method.output_dim, config.truncate_dim
    if isinstance(truncate_dim, bool) or not isinstance(truncate_dim, int) or not 1 <= truncate_dim < dim:
        raise DiveError(f"truncate_dim must be an integer from 1 to {dim - 1} (the pipeline outputs {dim} dims), "
                        f"got {truncate_dim!r}")
    if config.codec and pipeline.codec is not None:
        raise DiveError(f"the pipeline's {pipeline.codec.name} codec was fitted on {dim} dims, not {truncate_dim}: "
                        "export without it (--no-codec) or without --truncate-dim")


def _codec_module(codec: Codec) -> StModule:
    """The fitted codec as the last module (:class:`DiveCodec`); the lossless codec has no per-row codes."""
    if codec.name == "lossless":
        raise DiveError("the lossless codec codes a whole matrix, not one row per text: export with --no-codec")
    module = DiveCodec(codec)
    return StModule(CODEC_FOLDER, f"{DiveCodec.__module__}.DiveCodec", lambda folder: module.save(str(folder)))


def export_sentence_transformers(pipeline: Pipeline, model_folder: str | Path, out: str | Path,
                                 config: ExportConfig = ExportConfig()) -> Path:
    """Write ``out``: the frozen model folder, the pipeline appended as its last modules, and a model card.

    The model folder must be the pipeline's base model (its files' SHA-256, when the pipeline
    records one). With the codec (default), ``encode()`` returns the stored codes and the float
    vectors are under ``output_value="float_embedding"``. The card (README.md) is written from the
    pipeline's recorded facts (:mod:`dive.model_card`); the model's ``prompts`` gain the pipeline's.
    Nothing is left at ``out`` unless the whole folder was written.
    """
    model_folder, out = Path(model_folder), Path(out)
    modules_path = model_folder / "modules.json"
    if not modules_path.exists():
        raise DiveError(f"{model_folder}: no modules.json (not a sentence-transformers model folder)")
    if out.exists():
        raise DiveError(f"{out}: already exists; choose a new folder")
    pipeline.check_base_model(ModelIdentity(model_folder.name, model_digest(model_folder)), f"--model {model_folder}",
                              prompts=False)
    appended = appended_modules(pipeline, config)
    out.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        staged = scratch / "model"
        shutil.copytree(model_folder, staged)
        modules = json.loads(modules_path.read_text())
        for module in appended:
            (staged / module.folder).mkdir()
            module.write(staged / module.folder)
            modules.append({"idx": len(modules), "name": str(len(modules)), "path": module.folder, "type": module.type})
        (staged / "modules.json").write_text(json.dumps(modules, indent=2))
        _add_prompts(staged, pipeline)
        (staged / CARD_FILE).write_text(model_card(pipeline, config.truncate_dim, config.codec))
        os.replace(staged, out)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return out


def _add_prompts(folder: Path, pipeline: Pipeline) -> None:
    """Put the pipeline's prompts into the model's ``prompts`` (``encode(texts, prompt_name="query")``)."""
    base = pipeline.base_model
    prompts = {name: getattr(base, field) for field, name in PROMPT_NAMES.items()
               if base is not None and getattr(base, field)}
    if not prompts:
        return
    path = folder / ST_CONFIG
    config = json.loads(path.read_text()) if path.exists() else {}
    config["prompts"] = {**(config.get("prompts") or {}), **prompts}
    path.write_text(json.dumps(config, indent=2))


def export_onnx(pipeline: Pipeline, out: str | Path, check_vectors: np.ndarray | None = None,
                seed: int = 0) -> dict[str, Any]:
    """Write the pipeline's method to ``out`` as ONNX (input ``embeddings`` ``[batch, input_dim]``,
    output ``compressed`` ``[batch, dim]``) and check it with ONNX Runtime.

    The check runs ``check_vectors`` (default: ``ONNX_CHECK_ROWS`` random unit vectors) through
    both ONNX Runtime and ``pipeline.transform``; if they differ by more than ``ONNX_TOLERANCE``
    no file is left. The codec, if any, is not part of the graph. Returns the file and the
    measured maximum difference.
    """
    method = pipeline.method
    module = method.inference_module()
    if check_vectors is None:
        check_vectors = np.random.default_rng(seed).standard_normal((ONNX_CHECK_ROWS, method.input_dim))
        check_vectors = (check_vectors / np.linalg.norm(check_vectors, axis=1, keepdims=True)).astype(np.float32)
    out = Path(out)
    with atomic_path(out) as tmp:
        _write_onnx(module, method.input_dim, tmp)
        max_difference = float(np.abs(_run_onnx(tmp, check_vectors) - pipeline.transform(check_vectors)).max())
        if not max_difference <= ONNX_TOLERANCE:
            raise DiveError(f"{out}: ONNX output differs from torch by {max_difference:.2e} "
                            f"(> {ONNX_TOLERANCE:g}); nothing written")
    return {"output": str(out), "format": "onnx", "opset": ONNX_OPSET, "input": "embeddings",
            "output_name": "compressed", "checked_rows": len(check_vectors), "max_abs_difference": max_difference,
            **pipeline.describe()}


def _write_onnx(module: torch.nn.Module, input_dim: int, path: Path) -> None:
    require("onnxscript", "onnx")  # torch's ONNX exporter needs it
    example = torch.nn.functional.normalize(torch.ones(2, input_dim), dim=1)
    batch = torch.export.Dim("batch", min=1)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(module, (example,), input_names=["embeddings"], output_names=["compressed"],
                                    dynamic_shapes=({0: batch},), opset_version=ONNX_OPSET, dynamo=True,
                                    verbose=False)
    program.save(str(path), external_data=False)


def _run_onnx(path: Path, vectors: np.ndarray) -> np.ndarray:
    onnxruntime = require("onnxruntime", "onnx")
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["compressed"], {"embeddings": vectors.astype(np.float32)})[0]
