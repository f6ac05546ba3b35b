"""Human-readable renderings of results records."""

from __future__ import annotations

from typing import Any


def format_result(record: dict[str, Any]) -> str:
    """A short text summary of one experiment record (what ``dive train`` prints without --json)."""
    lines = [
        f"{record['dataset']} | {record['protocol_label']}",
        f"method {record['method']} -> {record['dim']} dims (from {record['input_dim']}), seed {record['seed']}, "
        f"{record['n_test_queries']} test queries, {record['n_train_triplets']} training triplets per epoch",
    ]
    for name, value in record["metrics"].items():
        frozen = record["frozen_metrics"][name]
        lines.append(f"  {name:<10} {value:.4f}   frozen {frozen:.4f}   retention {record['retention'][name]:.1%}")
    if record.get("epochs"):
        last = record["epochs"][-1]
        parts = ", ".join(f"{key} {value:.4f}" for key, value in last.items() if key not in ("epoch", "seconds"))
        lines.append(f"  epoch {last['epoch']:.0f}: {parts}")
    lines.append(f"  train {record['train_seconds']:.1f}s, wall {record['wall_seconds']:.1f}s")
    if record.get("saved_to"):
        lines.append(f"  saved to {', '.join(record['saved_to'])}")
    return "\n".join(lines)
