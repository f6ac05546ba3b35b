"""Figures for reports (matplotlib, PNG): training dynamics, nDCG vs dim, heldout vs paper."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from dive.experiments.pareto import pareto_front  # noqa: E402
from dive.methods import method_role  # noqa: E402
from dive.utils import atomic_path  # noqa: E402


def _save(figure: plt.Figure, path: Path) -> str:
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=120, format="png")
    plt.close(figure)
    return path.name


def training_dynamics(records: list[dict[str, Any]], path: Path) -> str | None:
    """Like the DIVE paper's Figure 2: active triplet ratio per epoch per dataset (left) and
    the loss decomposition, triplet vs contrastive, per epoch (right), for DIVE (the main method)."""
    runs = [r for r in records if method_role(r["method"]) == "main" and r.get("epochs")
            and "active_ratio" in r["epochs"][0]]
    if not runs:
        return None
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for record in sorted(runs, key=lambda r: (r["dataset"], r["protocol"], r["dim"], r["seed"])):
        if record["seed"] != runs[0]["seed"]:
            continue
        epochs = [e["epoch"] for e in record["epochs"]]
        label = f"{record['dataset']} {record['protocol']} {record['dim']}d"
        left.plot(epochs, [100 * e["active_ratio"] for e in record["epochs"]], label=label)
        line, = right.plot(epochs, [e["loss_triplet"] for e in record["epochs"]], label=f"{label}: triplet")
        right.plot(epochs, [e["loss_contrast"] * record["config"]["lambda_contrast"] for e in record["epochs"]],
                   linestyle="--", color=line.get_color(), label=f"{label}: λ·contrastive")
    left.set(title="Active triplet ratio (DIVE)", xlabel="epoch", ylabel="active triplets (%)")
    left.axhline(10, color="grey", linewidth=0.8, linestyle=":")
    right.set(title="Loss decomposition (DIVE)", xlabel="epoch", ylabel="loss", yscale="log")
    left.legend(fontsize=7)
    right.legend(fontsize=6)
    return _save(figure, path)


def ndcg_by_dim(records: list[dict[str, Any]], protocol: str, dataset: str) -> dict[str, dict[int, list[float]]]:
    """The lines of one :func:`ndcg_vs_dim` panel: method -> dim -> nDCG@10 over seeds (frozen and method
    variants excluded: a variant is run at one dim for an ablation, and its table is in the report)."""
    by_method: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        if (r["protocol"], r["dataset"]) == (protocol, dataset) and r["method"] != "frozen" and "variant_of" not in r:
            by_method[r["method"]][r["dim"]].append(r["metrics"]["ndcg@10"])
    return by_method


def ndcg_vs_dim(records: list[dict[str, Any]], path: Path, protocol: str = "heldout") -> str | None:
    """nDCG@10 against target dimension, one line per method, one panel per dataset."""
    chosen = [r for r in records if r["protocol"] == protocol]
    datasets = sorted({r["dataset"] for r in chosen})
    if not datasets:
        return None
    figure, axes = plt.subplots(1, len(datasets), figsize=(5.5 * len(datasets), 4), squeeze=False)
    for axis, dataset in zip(axes[0], datasets):
        for method, by_dim in sorted(ndcg_by_dim(chosen, protocol, dataset).items()):
            dims = sorted(by_dim)
            axis.plot(dims, [np.mean(by_dim[d]) for d in dims], marker="o", label=method,
                      linewidth=2.5 if method_role(method) == "main" else 1.2)
        frozen = next((r["frozen_metrics"]["ndcg@10"] for r in chosen if r["dataset"] == dataset), None)
        if frozen is not None:
            axis.axhline(frozen, color="black", linestyle="--", linewidth=1, label="frozen (full dim)")
        axis.set(title=f"{dataset} ({protocol})", xlabel="dimensions", ylabel="nDCG@10", xscale="log")
        dims = sorted({r["dim"] for r in chosen if r["dataset"] == dataset and r["dim"] < r["input_dim"]})
        axis.set_xticks(dims, [str(dim) for dim in dims])  # the grid's dims, not log-scale minor ticks
        axis.minorticks_off()
        axis.legend(fontsize=7)
    return _save(figure, path)


def heldout_vs_paper(records: list[dict[str, Any]], path: Path) -> str | None:
    """Grouped bars per method: heldout vs transductive paper nDCG@10 (smallest dim, first dataset)."""
    datasets = sorted({r["dataset"] for r in records})
    pairs = []
    for dataset in datasets:
        dims = sorted({r["dim"] for r in records if r["dataset"] == dataset and r["method"] != "frozen"})
        if not dims:
            continue
        dim = dims[0]
        for method in sorted({r["method"] for r in records if r["dataset"] == dataset}):
            values = {}
            for protocol in ("heldout", "paper"):
                hits = [r["metrics"]["ndcg@10"] for r in records if (r["dataset"], r["method"], r["protocol"]) ==
                        (dataset, method, protocol) and (r["dim"] == dim or method == "frozen")]
                if hits:
                    values[protocol] = float(np.mean(hits))
            if len(values) == 2:
                pairs.append((f"{dataset}\n{method}", values["heldout"], values["paper"], dim))
    if not pairs:
        return None
    figure, axis = plt.subplots(figsize=(max(6, 0.9 * len(pairs)), 4.5))
    positions = np.arange(len(pairs))
    axis.bar(positions - 0.2, [p[1] for p in pairs], width=0.4, label="heldout (honest)")
    axis.bar(positions + 0.2, [p[2] for p in pairs], width=0.4, label="paper (transductive)", hatch="//")
    axis.set_xticks(positions, [p[0] for p in pairs], fontsize=7, rotation=45, ha="right")
    axis.set(ylabel="nDCG@10", title=f"Held-out vs paper protocol ({pairs[0][3]}d; frozen at full dim)")
    axis.legend()
    return _save(figure, path)


def frontier(records: list[dict[str, Any]], path: Path, protocol: str = "heldout") -> str | None:
    """Bytes per vector (log x) vs nDCG@10 for every method x dim x codec, Pareto front highlighted."""
    chosen = [r for r in records if r["protocol"] == protocol and "bytes_per_vector" in r]
    if len({r.get("codec_label", "none") for r in chosen}) < 2:
        return None
    figure, axis = plt.subplots(figsize=(8, 5))
    points = [(r["bytes_per_vector"], r["metrics"]["ndcg@10"]) for r in chosen]
    for method in sorted({r["method"] for r in chosen}):
        mine = [(r["bytes_per_vector"], r["metrics"]["ndcg@10"]) for r in chosen if r["method"] == method]
        axis.scatter(*zip(*mine), label=method, s=30, alpha=0.8)
    front = pareto_front(points)
    axis.plot([points[i][0] for i in front], [points[i][1] for i in front], color="black", linewidth=1.5,
              label="Pareto front")
    for i in front:
        r = chosen[i]
        axis.annotate(f"{r['method']} {r['dim']}d {r.get('codec_label', 'none')}", points[i], fontsize=6,
                      xytext=(4, -8), textcoords="offset points")
    axis.set(xscale="log", xlabel="bytes per vector (log)", ylabel="nDCG@10",
             title=f"Storage vs quality ({protocol}; mean over datasets not taken: every cell shown)")
    axis.legend(fontsize=7)
    return _save(figure, path)


def make_figures(records: list[dict[str, Any]], folder: Path) -> list[str]:
    """Write every figure that the records support; return their file names."""
    made = [
        training_dynamics(records, folder / "training_dynamics.png"),
        ndcg_vs_dim(records, folder / "ndcg_vs_dim_heldout.png", "heldout"),
        ndcg_vs_dim(records, folder / "ndcg_vs_dim_paper.png", "paper"),
        heldout_vs_paper(records, folder / "heldout_vs_paper.png"),
        frontier(records, folder / "frontier_heldout.png", "heldout"),
    ]
    return [name for name in made if name]
