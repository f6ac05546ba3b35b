"""Export a fitted pipeline for the systems people use.

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
from pathlib import Path

import torch

from dive.errors import DiveError
from dive.methods import Method, load_method
from dive.pipeline import Pipeline

MODULE_FOLDER = "dive_adapter"


class DiveAdapter(torch.nn.Module):
    """sentence-transformers module: replaces ``sentence_embedding`` by the method's output."""

    def __init__(self, method: Method):
        super().__init__()
        self.method = method

    def forward(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        embeddings = features["sentence_embedding"]
        compressed = self.method.transform(embeddings.detach().float().cpu().numpy())
        features["sentence_embedding"] = torch.from_numpy(compressed).to(embeddings.device)
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
