"""Export a fitted pipeline for the systems people use.

``onnx``: the method's inference map (``[n, input_dim]`` frozen vectors in, ``[n, dim]`` unit
vectors out, any batch size) as one ONNX graph, checked against the pipeline's own output with
ONNX Runtime before the file is kept.

``sentence-transformers``: a copy of the frozen model folder with the fitted method appended,
so ``SentenceTransformer(path).encode(texts)`` returns the compressed vectors directly.

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
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dive.errors import DiveError
from dive.methods import Method, load_method
from dive.pipeline import Pipeline
from dive.utils import atomic_path, require

MODULE_FOLDER = "dive_adapter"
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

    def save(self, output_path: str, *args, **kwargs) -> None:
        self.method.save(output_path)

    @staticmethod
    def load(input_path: str) -> "DiveAdapter":
        return DiveAdapter(load_method(input_path))


def _appended_modules(method: Method) -> list[tuple[str, torch.nn.Module]]:
    """(folder, sentence-transformers module) pairs that reproduce ``method.transform``."""
    from sentence_transformers.sentence_transformer.modules import Dense, Normalize

    layers = method.linear_layers()
    if layers is None:
        return [(MODULE_FOLDER, DiveAdapter(method))]
    modules: list[tuple[str, torch.nn.Module]] = []
    for index, (weight, bias, relu) in enumerate(layers):
        dense = Dense(weight.shape[1], weight.shape[0], bias=True,
                      activation_function=torch.nn.ReLU() if relu else torch.nn.Identity())
        with torch.no_grad():
            dense.linear.weight.copy_(weight)
            dense.linear.bias.copy_(bias)
        modules.append((f"dive_dense_{index}", dense))
    return modules + [("dive_normalize", Normalize())]


def export_sentence_transformers(pipeline: Pipeline, model_folder: str | Path, out: str | Path) -> Path:
    """Write ``out``: the frozen model folder plus the pipeline's method as its last module.

    The codec, if any, is not part of the export: ``encode()`` returns the float vectors the
    codec would store (apply ``pipeline.codec.encode`` to them for codes).
    """
    model_folder, out = Path(model_folder), Path(out)
    modules_path = model_folder / "modules.json"
    if not modules_path.exists():
        raise DiveError(f"{model_folder}: no modules.json (not a sentence-transformers model folder)")
    if out.exists():
        raise DiveError(f"{out}: already exists; choose a new folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        staged = scratch / "model"
        shutil.copytree(model_folder, staged)
        modules = json.loads(modules_path.read_text())
        for folder, module in _appended_modules(pipeline.method):
            (staged / folder).mkdir()
            module.save(str(staged / folder))
            modules.append({"idx": len(modules), "name": str(len(modules)), "path": folder,
                            "type": f"{type(module).__module__}.{type(module).__name__}"})
        (staged / "modules.json").write_text(json.dumps(modules, indent=2))
        os.replace(staged, out)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return out


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
