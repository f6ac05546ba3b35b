"""Transform throughput of every adapter at batch 4096, torch and ONNX Runtime, against the
machine's fp32 matmul rate for the same FLOPs (the roofline).

    python benchmarks/bench_transform.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from common import best_seconds, matmul_flops_per_second, unit_rows, write_result
from dive.data import TrainSet
from dive.export import export_onnx
from dive.methods import create_method
from dive.pipeline import Pipeline

BATCH = 4096
INPUT_DIM = 384
DIM = 128
METHODS = ["dive", "matryoshka-adaptor", "search-adaptor", "smec", "autoencoder", "pca", "truncate"]


def fitted(name: str, corpus: np.ndarray):
    """The method with the paper's shapes (hidden 2048), fitted for one short epoch: speed does
    not depend on how well the weights are trained."""
    settings = {"dim": DIM}
    if name not in ("pca", "truncate"):
        settings["train"] = {"epochs": 1, "progress": False}
    queries = corpus[:256]
    from dive.data import MiningConfig, build_sampler

    ids = [f"d{i}" for i in range(len(corpus))]
    qrels = {f"q{i}": {f"d{i}": 1} for i in range(len(queries))}
    sampler = build_sampler([f"q{i}" for i in range(len(queries))], queries, ids, corpus, qrels, MiningConfig())
    return create_method(name, **settings).fit(TrainSet(queries, corpus, sampler))


def inference_flops(module: torch.nn.Module) -> int:
    """Multiply-adds x 2 of the inference map's linear layers per vector (ReLU and normalisation
    excluded): for DIVE, head 1 only, which is what dive's transform computes."""
    return sum(2 * layer.in_features * layer.out_features for layer in module.modules()
               if isinstance(layer, torch.nn.Linear))


def main() -> None:
    torch.manual_seed(0)
    roofline = matmul_flops_per_second()
    print(f"fp32 matmul roofline: {roofline / 1e9:.1f} GFLOP/s")
    corpus = unit_rows(8192, INPUT_DIM)
    batch = corpus[:BATCH]
    rows = []
    for name in METHODS:
        method = fitted(name, corpus)
        module = method.inference_module()
        flops = inference_flops(module)
        tensor = torch.from_numpy(batch)
        with torch.inference_mode():
            module_seconds = best_seconds(lambda: module(tensor))
        transform_seconds = best_seconds(lambda: method.transform(batch))
        onnx_seconds = None
        with tempfile.TemporaryDirectory() as scratch:
            import onnxruntime

            export_onnx(Pipeline(method), Path(scratch) / "adapter.onnx")
            session = onnxruntime.InferenceSession(str(Path(scratch) / "adapter.onnx"),
                                                   providers=["CPUExecutionProvider"])
            onnx_seconds = best_seconds(lambda: session.run(None, {"embeddings": batch}))
        if name == "truncate":
            flops = 0  # its transform is a slice, not a matmul: no compute roofline applies
        row = {"method": name, "flops_per_vector": flops,
               "torch_module_vectors_per_s": BATCH / module_seconds,
               "transform_vectors_per_s": BATCH / transform_seconds,
               "onnxruntime_vectors_per_s": BATCH / onnx_seconds}
        for key, seconds in (("torch_module", module_seconds), ("transform", transform_seconds),
                             ("onnxruntime", onnx_seconds)):
            row[f"{key}_roofline_fraction"] = flops * BATCH / seconds / roofline if flops else None
        rows.append(row)
        share = {key: f"{row[f'{key}_roofline_fraction']:.0%}" if flops else "n/a"
                 for key in ("torch_module", "transform", "onnxruntime")}
        print(f"{name:<20} {flops / 1e6:5.2f} MFLOP/vec  vectors/s (share of roofline): torch module "
              f"{row['torch_module_vectors_per_s']:>10,.0f} ({share['torch_module']}), dive transform "
              f"{row['transform_vectors_per_s']:>10,.0f} ({share['transform']}), onnxruntime "
              f"{row['onnxruntime_vectors_per_s']:>10,.0f} ({share['onnxruntime']})")
    write_result("transform", {"batch": BATCH, "input_dim": INPUT_DIM, "dim": DIM,
                               "matmul_flops_per_s": roofline, "methods": rows,
                               "note": "truncate is a slice (no FLOPs); pca does 0.1 MFLOP per 1.5 KB read, "
                                       "so memory traffic, not the matmul rate, bounds it"})


if __name__ == "__main__":
    main()
