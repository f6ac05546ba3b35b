"""Reports: a text summary of one record, and ``report.md`` for a grid's ``results.jsonl``.

Every number in a report is read from the records; nothing is typed in by hand.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Iterable

import numpy as np

from dive.evaluate import retention
from dive.experiments.pareto import pareto_front
from dive.methods import REGISTRY, ablations_of, method_role, methods_with_role
from dive.quantize.systems import equivalent
from dive.significance import SIGNIFICANCE_METRIC

PROTOCOL_TITLES = {
    "heldout": "Held-out protocol (honest: test queries never seen in training)",
    "heldout-strict": ("Held-out protocol, strict view (the same fits, scored without the test queries that have "
                       "a near-duplicate train query: frozen cosine above split_config.near_duplicate_threshold)"),
    "paper": "Paper protocol (TRANSDUCTIVE: test queries were used in training; reproduces the paper only)",
}


def main_columns() -> list[str]:
    """Columns of the nDCG and Recall tables: the baselines and the main method, in registry order."""
    return methods_with_role("baseline", "main")


def ablation_columns() -> list[str]:
    """Columns of the ablation table: each main method followed by its ablations."""
    return [name for main in methods_with_role("main") for name in (main, *ablations_of(main))]


def unsupervised_columns() -> list[str]:
    """Columns of the unsupervised table: the baselines that need no labels, and the main method."""
    return [name for name in main_columns() if method_role(name) == "main" or not REGISTRY[name].supervised]


def variant_columns(results: Results, protocol: str) -> dict[str, list[str]]:
    """Per method, the variants (``method:setting=value`` labels, see :func:`dive.experiments.grid.parse_method`)
    the protocol has records of, in the order they first appear."""
    variants: dict[str, list[str]] = {}
    for record in results.records:
        if record["protocol"] == protocol and "variant_of" in record:
            labels = variants.setdefault(record["variant_of"], [])
            if record["method"] not in labels:
                labels.append(record["method"])
    return variants


def every_column() -> list[str]:
    """Columns of the retention and time tables: the main tables' and the ablations'."""
    main = main_columns()
    return main + [name for name in ablation_columns() if name not in main]


def format_result(record: dict[str, Any]) -> str:
    """A short text summary of one experiment record (what ``dive train`` prints without --json)."""
    lines = [
        f"{record['dataset']} | {record['protocol_label']}",
        f"method {record['method']} -> {record['dim']} dims (from {record['input_dim']}), seed {record['seed']}, "
        f"{record['n_test_queries']} test queries, {record['n_train_triplets']} training triplets per epoch",
    ]
    codec = record.get("codec")
    lines.append(f"  stored as {codec['name'] if codec else 'float32'}: {record.get('bytes_per_vector', 0):g} bytes per vector")
    for name, value in record["metrics"].items():
        frozen = record["frozen_metrics"][name]
        lines.append(f"  {name:<10} {value:.4f}   frozen {frozen:.4f}   retention {record['retention'][name]:.1%}")
    test = (record.get("significance") or {}).get("vs_frozen")
    if test:
        lines.append(f"  vs frozen: paired {test['test']} test over {test['n_queries']} test queries, "
                     f"{test['metric']} p = {test['p']:.3g} ({'significant' if test['significant'] else 'not significant'}"
                     f" at {test['alpha']:g}; wins/ties/losses {test['wins']}/{test['ties']}/{test['losses']})")
    if record.get("epochs"):
        last = record["epochs"][-1]
        parts = ", ".join(f"{key} {value:.4f}" for key, value in last.items() if key not in ("epoch", "seconds"))
        lines.append(f"  epoch {last['epoch']:.0f}: {parts}")
    selection = record.get("selection")
    if selection:
        kept = ", ".join("/".join(str(epoch) for epoch in stages) for stages in selection["kept_epochs"])
        lines.append(f"  kept epoch {kept} by {SELECTION_RULE_TEXT[selection['rule']].format(**selection)}")
    strict = record.get("strict")
    if strict:
        lines.append(f"  strict view ({strict['near_duplicates_dropped']} test queries with a near-duplicate train "
                     f"query left out): nDCG@10 {strict['metrics']['ndcg@10']:.4f}, "
                     f"frozen {strict['frozen_metrics']['ndcg@10']:.4f}")
    lines.append(f"  train {record['train_seconds']:.1f}s, wall {record['wall_seconds']:.1f}s")
    if record.get("saved_to"):
        lines.append(f"  saved to {', '.join(record['saved_to'])}")
    return "\n".join(lines)


class Results:
    """Records indexed by (protocol, dataset, method, dim) -> list over seeds."""

    def __init__(self, records: Iterable[dict[str, Any]]):
        records = list(records)
        self.with_codecs = records
        self.records = [record for record in records if record.get("codec_label", "none") == "none"]
        self.records += [strict_view(record) for record in self.records if "strict" in record]
        self.cells: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
        for record in self.records:
            self.cells[(record["protocol"], record["dataset"], record["method"], record["dim"])].append(record)

    def values(self, protocol: str, dataset: str, method: str, dim: int, key: str, metric: str = "ndcg@10",
               seeds: set[int] | None = None) -> list[float]:
        return [float(record[key][metric]) if isinstance(record[key], dict) else float(record[key])
                for record in self.cells.get((protocol, dataset, method, dim), [])
                if seeds is None or record["seed"] in seeds]

    def seeds(self, protocol: str, dataset: str, method: str, dim: int) -> set[int]:
        return {record["seed"] for record in self.cells.get((protocol, dataset, method, dim), [])}

    def frozen(self, protocol: str, dataset: str, metric: str = "ndcg@10") -> float | None:
        for record in self.records:
            if (record["protocol"], record["dataset"]) == (protocol, dataset):
                return float(record["frozen_metrics"][metric])
        return None

    def significant(self, protocol: str, dataset: str, method: str, dim: int) -> bool:
        """Whether every record of the cell (each seed) differs from frozen by its paired test (see
        :data:`SIGNIFICANCE_MARK`); False where a record has no test (made before dive recorded them)."""
        records = self.cells.get((protocol, dataset, method, dim), [])
        return bool(records) and all(_significant(record) for record in records)

    def sorted_set(self, field: str, **where: Any) -> list:
        chosen = {record[field] for record in self.records
                  if all(record[key] == value for key, value in where.items())}
        return sorted(chosen, key=lambda value: (str(type(value)), value))


SIGNIFICANCE_MARK = "†"
"""Marks a cell whose paired test against frozen (ranx, over the test queries, nDCG@10) gives p < 0.05."""

SIGNIFICANCE_LEGEND = (f"{SIGNIFICANCE_MARK} marks an nDCG@10 cell that differs significantly from frozen: a paired "
                       "t-test over its test queries (ranx; folds pooled; every seed) gives p < 0.05. An unmarked "
                       "cell's gap may be noise, or its record predates the test (records without a "
                       "`significance` field show no mark).")


def _vs_frozen(record: dict[str, Any]) -> dict[str, Any] | None:
    """The record's paired test against frozen, or None (records made before dive recorded them)."""
    return (record.get("significance") or {}).get("vs_frozen")


def _significant(record: dict[str, Any]) -> bool:
    test = _vs_frozen(record)
    return bool(test and test["significant"])


def _p_text(record: dict[str, Any]) -> str:
    """``p`` against frozen with the mark, ``–`` where the record has no test."""
    test = _vs_frozen(record)
    return f"{test['p']:.2g}{' ' + SIGNIFICANCE_MARK if test['significant'] else ''}" if test else "–"


def strict_view(record: dict[str, Any]) -> dict[str, Any]:
    """A held-out record as the ``heldout-strict`` protocol: the same fit scored on its strict view (its
    significance test, made on every test query, does not apply)."""
    strict = record["strict"]
    return {**record, "protocol": "heldout-strict", "significance": None, "metrics": strict["metrics"],
            "frozen_metrics": strict["frozen_metrics"], "n_test_queries": strict["n_test_queries"],
            "retention": retention(strict["metrics"], strict["frozen_metrics"])}


def mean_std(values: list[float], digits: int = 4, n_expected: int = 1) -> str:
    """``mean ± std`` over seeds; ``(n=k)`` marks a cell with fewer seeds than others in its table."""
    if not values:
        return "–"
    if len(values) == 1:
        text = f"{values[0]:.{digits}f}"
    else:
        text = f"{np.mean(values):.{digits}f} ± {np.std(values, ddof=1):.{digits}f}"
    return text + (f" (n={len(values)})" if len(values) < n_expected else "")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines + [""]


def _present(results: Results, protocol: str, dim: int, methods: Iterable[str]) -> tuple[list[str], list[str]]:
    """The protocol's datasets, and those of ``methods`` with at least one record at ``dim``."""
    datasets = results.sorted_set("dataset", protocol=protocol)
    return datasets, [m for m in methods if any(results.cells.get((protocol, d, m, dim)) for d in datasets)]


def metric_table(results: Results, protocol: str, dim: int, methods: Iterable[str], key: str = "metrics",
                 metric: str = "ndcg@10", digits: int = 4) -> list[str]:
    """Rows = datasets, columns = frozen (full dim) + ``methods``; best compressed cell in bold."""
    datasets, present = _present(results, protocol, dim, methods)
    if not present:
        return []
    rows = []
    n_seeds = _most_seeds(results, protocol, dim, datasets, present)
    for dataset in datasets:
        means = {m: np.mean(v) for m in present if (v := results.values(protocol, dataset, m, dim, key, metric))}
        best = max(means, key=means.get) if means else None
        row = [dataset]
        if key == "metrics":
            frozen = results.frozen(protocol, dataset, metric)
            row.append(f"{frozen:.{digits}f}" if frozen is not None else "–")
        for method in present:
            cell = mean_std(results.values(protocol, dataset, method, dim, key, metric), digits, n_seeds)
            if key == "metrics" and metric == SIGNIFICANCE_METRIC and results.significant(protocol, dataset,
                                                                                           method, dim):
                cell += f" {SIGNIFICANCE_MARK}"
            row.append(f"**{cell}**" if method == best and key == "metrics" else cell)
        rows.append(row)
    header = ["dataset", *(["frozen (full dim)"] if key == "metrics" else []), *present]
    return _table(header, rows)


def _most_seeds(results: Results, protocol: str, dim: int, datasets: list[str], methods: list[str]) -> int:
    return max((len(results.seeds(protocol, d, m, dim)) for d in datasets for m in methods), default=1)


def time_table(results: Results, protocol: str, dim: int, methods: Iterable[str]) -> list[str]:
    datasets, present = _present(results, protocol, dim, methods)
    n_seeds = _most_seeds(results, protocol, dim, datasets, present)
    rows = [[dataset, *[mean_std(results.values(protocol, dataset, m, dim, "train_seconds"), 1, n_seeds)
                        for m in present]]
            for dataset in datasets]
    return _table(["dataset", *present], rows) if present else []


def strict_counts(results: Results) -> list[str]:
    """How many test queries the strict view kept and dropped, per dataset."""
    counts = sorted({(r["dataset"], r["n_test_queries"], r["strict"]["near_duplicates_dropped"])
                     for r in results.records if r["protocol"] == "heldout-strict"})
    return ["Test queries kept / dropped for a near-duplicate train query: "
            + ", ".join(f"{dataset} {kept} / {dropped}" for dataset, kept, dropped in counts) + "."]


def selection_rules(results: Results, protocol: str) -> list[str]:
    """One line naming the rule(s) that chose the kept weights of the protocol's trained cells."""
    rules = set()
    for record in results.records:
        if record["protocol"] == protocol and record.get("config", {}).get("train"):
            selection = record.get("selection")
            rules.add(SELECTION_RULE_TEXT.get(selection["rule"], selection["rule"]).format(**selection)
                      if selection else "fixed epochs, last kept (recorded before dive had model selection)")
    return [f"Model selection: {'; '.join(sorted(rules))}.", ""] if rules else []


SELECTION_RULE_TEXT = {
    "validation": ("best validation nDCG@10, the untrained start (epoch 0) included, patience {patience} epochs; "
                   "the validation slice is carved from the training queries"),
    "last": "fixed epochs, last kept (the paper protocol's rule, and that of methods that use no labels)",
}


def selection_table(results: Results, protocol: str, dim: int, methods: Iterable[str]) -> list[str]:
    """Kept epoch / epochs run of each trained method (last stage; mean over seeds and folds)."""
    datasets, present = _present(results, protocol, dim, methods)
    cells: dict[tuple[str, str], str] = {}
    for dataset, method in ((d, m) for d in datasets for m in present):
        chosen = [record["selection"] for record in results.cells.get((protocol, dataset, method, dim), [])
                  if record.get("selection")]
        if chosen:
            kept = [stages[-1] for selection in chosen for stages in selection["kept_epochs"]]
            run = [stages[-1] for selection in chosen for stages in selection["epochs_run"]]
            cells[dataset, method] = f"{np.mean(kept):.1f} / {np.mean(run):.1f}"
    trained = [m for m in present if any((d, m) in cells for d in datasets)]
    rows = [[dataset, *[cells.get((dataset, m), "") for m in trained]] for dataset in datasets]
    return _table(["dataset", *trained], rows) if trained else []


def comparison(results: Results, protocol: str) -> list[str]:
    """Auto-written: where DIVE (the main method) is the best compressed method, and where a
    baseline beats it."""
    lines = []
    for dataset, main in ((d, m) for d in results.sorted_set("dataset", protocol=protocol)
                          for m in methods_with_role("main")):
        for dim in results.sorted_set("dim", protocol=protocol, dataset=dataset, method=main):
            dive = results.values(protocol, dataset, main, dim, "metrics")
            rivals = {m: np.mean(v) for m in methods_with_role("baseline")
                      if (v := results.values(protocol, dataset, m, dim, "metrics"))}
            if not dive or not rivals:
                continue
            best_rival = max(rivals, key=rivals.get)
            gap = np.mean(dive) - rivals[best_rival]
            frozen = results.frozen(protocol, dataset)
            verdict = "DIVE wins" if gap > 0 else f"DIVE loses to {best_rival}"
            lines.append(f"- {dataset} {dim}d: {verdict} (DIVE {np.mean(dive):.4f} vs best other "
                         f"{best_rival} {rivals[best_rival]:.4f}, {gap:+.4f}); frozen full-dim {frozen:.4f}, "
                         f"DIVE {'above' if np.mean(dive) > frozen else 'below'} it.")
    return lines


def inflation(results: Results) -> list[str]:
    """How far the transductive paper protocol inflates each method over heldout (nDCG@10)."""
    rows = []
    for dataset in results.sorted_set("dataset"):
        for method in results.sorted_set("method", dataset=dataset):
            for dim in results.sorted_set("dim", dataset=dataset, method=method):
                seeds = results.seeds("heldout", dataset, method, dim) & results.seeds("paper", dataset, method, dim)
                heldout = results.values("heldout", dataset, method, dim, "metrics", seeds=seeds)
                paper = results.values("paper", dataset, method, dim, "metrics", seeds=seeds)
                if heldout and paper:
                    gain = round(float(np.mean(paper) - np.mean(heldout)), 4) + 0.0  # + 0.0: no "-0.0000"
                    rows.append([dataset, method, str(dim), str(len(seeds)), f"{np.mean(heldout):.4f}",
                                 f"{np.mean(paper):.4f}", f"{gain:+.4f}"])
    header = ["dataset", "method", "dim", "seeds", "heldout", "paper (transductive)", "inflation"]
    return _table(header, rows) if rows else []


def frontier_table(results: Results, protocol: str, budget: float = 64) -> list[str]:
    """Every method x dim x codec by bytes per vector (mean ± std over seeds), Pareto-optimal ones marked
    (on the means), per dataset."""
    lines = []
    for dataset in sorted({r["dataset"] for r in results.with_codecs if r["protocol"] == protocol}):
        records = [r for r in results.with_codecs if (r["protocol"], r["dataset"]) == (protocol, dataset)]
        if len({r.get("codec_label", "none") for r in records}) < 2:
            continue
        groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
        for record in records:
            groups[record["method"], record["dim"], record.get("codec_label", "none")].append(record)
        cells = sorted(groups.values(), key=lambda g: (g[0]["bytes_per_vector"], -_mean(g, "ndcg@10")))
        n_seeds = max(len(group) for group in cells)
        front = set(pareto_front([(g[0]["bytes_per_vector"], _mean(g, "ndcg@10")) for g in cells]))
        rows = [[g[0]["method"], str(g[0]["dim"]), g[0].get("codec_label", "none"), f"{g[0]['bytes_per_vector']:g}",
                 mean_std(_values(g, "ndcg@10"), 4, n_seeds), _largest_p_text(g),
                 mean_std(_values(g, "recall@10"), 4, n_seeds), "yes" if i in front else ""]
                for i, g in enumerate(cells)]
        lines += [f"### Storage frontier, {dataset}", ""]
        lines += _table(["method", "dim", "codec", "bytes/vector", "nDCG@10", "p vs frozen (largest over seeds)",
                         "Recall@10", "Pareto"], rows)
        affordable = [g for g in cells if g[0]["bytes_per_vector"] <= budget]
        if affordable:
            best = max(affordable, key=lambda g: _mean(g, "ndcg@10"))
            lines += [f"Best nDCG@10 at <= {budget:g} bytes per vector: {best[0]['method']} {best[0]['dim']}d + "
                      f"{best[0].get('codec_label', 'none')} ({best[0]['bytes_per_vector']:g} B): "
                      f"{_mean(best, 'ndcg@10'):.4f}.", ""]
        lines += system_equivalents(records)
    return lines


def _values(records: list[dict[str, Any]], metric: str) -> list[float]:
    return [float(record["metrics"][metric]) for record in records]


def _mean(records: list[dict[str, Any]], metric: str) -> float:
    return float(np.mean(_values(records, metric)))


def _largest_p_text(records: list[dict[str, Any]]) -> str:
    """The least significant seed's :func:`_p_text` (``–`` when any seed has no test)."""
    if not all(map(_vs_frozen, records)):
        return "–"
    return _p_text(max(records, key=lambda record: _vs_frozen(record)["p"]))


def system_equivalents(cells: list[dict[str, Any]]) -> list[str]:
    """Which deployed setting each codec of the frontier equals (:func:`dive.quantize.systems.equivalent`)."""
    labels = {r.get("codec_label", "none"): r.get("codec") for r in cells}
    rows = [[label, equivalent(codec)] for label, codec in sorted(labels.items())]
    return ["Which codec settings equal which database setting (a codec saved without `threshold` or `rounding` "
            "used median and nearest):", "", *_table(["codec", "equals"], rows)]


def environment(records: list[dict[str, Any]], wall_seconds: float | None) -> list[str]:
    """Where the cells ran, as their records say (not the machine that rebuilds the report)."""
    versions = records[-1].get("versions", {}) if records else {}
    machines = sorted({str(record.get("machine", "not recorded")) for record in records}) or ["not recorded"]
    lines = [f"- machine{'s' if len(machines) > 1 else ''}: {'; '.join(machines)}"]
    lines.append("- versions: " + ", ".join(f"{name} {version}" for name, version in versions.items()))
    threads = {record.get("threads") for record in records if record.get("threads")}
    if threads:
        lines.append(f"- torch threads: {', '.join(map(str, sorted(threads)))}")
    devices = {record["config"].get("train", {}).get("device", "cpu") for record in records}
    lines.append(f"- training device: {', '.join(sorted(devices))}")
    cell_seconds = sum(record.get("wall_seconds", 0.0) for record in records)
    lines.append(f"- cells: {len(records)}, summed cell wall time {cell_seconds / 60:.1f} min"
                 + (f", this invocation {wall_seconds / 60:.1f} min" if wall_seconds is not None else ""))
    return lines


def embedding_models(records: list[dict[str, Any]]) -> list[str]:
    """Which frozen embedding model produced each dataset's vectors (every number depends on it)."""
    datasets_by_model: dict[str, set[str]] = {}
    for record in records:
        datasets_by_model.setdefault(str(record.get("model", "unrecorded")), set()).add(record["dataset"])
    if not datasets_by_model:
        return []
    return ["Frozen embeddings: " + "; ".join(f"{model} for {', '.join(sorted(datasets))}"
                                              for model, datasets in sorted(datasets_by_model.items())) + ".", ""]


def build_report(records: list[dict[str, Any]], figures: Iterable[str] = (), wall_seconds: float | None = None) -> str:
    """The markdown report of a grid: tables per protocol, inflation, comparison, environment."""
    results = Results(records)
    lines = ["# dive reproduction report", "",
             "Every number below was computed by dive and read from `results.jsonl`. nDCG@10 and Recall@10 by "
             "exact inner-product search of the whole corpus (pytrec_eval); mean ± std over seeds where there are "
             "several; the best compressed method per row in **bold**.", "", SIGNIFICANCE_LEGEND, ""]
    lines += embedding_models(records)
    budgets = sorted({r["config"]["train"]["epochs"] for r in records if "train" in r.get("config", {})})
    if budgets:
        lines += [f"Training budget: {', '.join(map(str, budgets))} epochs per adapter (the paper trains 50)"
                  + ("; fewer epochs change every trained method's numbers." if budgets != [50] else "."), ""]
    for protocol in sorted({r["protocol"] for r in (*results.with_codecs, *results.records)}):
        lines += [f"## {PROTOCOL_TITLES.get(protocol, protocol)}", ""] + selection_rules(results, protocol)
        for dim in results.sorted_set("dim", protocol=protocol):
            if dim == max(results.sorted_set("input_dim", protocol=protocol) or [0]):
                continue
            lines += [f"### nDCG@10 at {dim} dims", ""] + metric_table(results, protocol, dim, main_columns())
            lines += [f"### Recall@10 at {dim} dims", ""] + metric_table(results, protocol, dim, main_columns(),
                                                                         metric="recall@10")
            if protocol == "heldout-strict":
                continue  # the same fits as held out: their ablations, times and selections are there
            lines += [f"### Ablations at {dim} dims (nDCG@10)", ""] + metric_table(results, protocol, dim,
                                                                                  ablation_columns())
            for method, labels in variant_columns(results, protocol).items():
                if not _present(results, protocol, dim, labels)[1]:
                    continue
                lines += [f"### Variants of {method} at {dim} dims (nDCG@10; each label names the settings it "
                          "changes)", ""] + metric_table(results, protocol, dim, [method, *labels])
            lines += [f"### Unsupervised baselines vs DIVE at {dim} dims (nDCG@10)", ""] + \
                metric_table(results, protocol, dim, unsupervised_columns())
            lines += [f"### Retention of frozen nDCG@10 at {dim} dims", ""] + \
                metric_table(results, protocol, dim, every_column(), key="retention", digits=3)
            lines += [f"### Train seconds at {dim} dims", ""] + time_table(results, protocol, dim, every_column())
            kept = selection_table(results, protocol, dim, every_column())
            if kept:
                lines += [f"### Kept epoch / epochs run at {dim} dims (last stage; mean over seeds and folds)",
                          ""] + kept
        if protocol == "heldout-strict":
            lines += strict_counts(results) + [""]
            continue
        shared = sorted({(r["dataset"], r["shared_relevant_docs"]) for r in results.records
                         if r["protocol"] == protocol and "shared_relevant_docs" in r})
        if shared:
            lines += ["Share of the test queries' relevant documents that are also relevant to a training query "
                      "(not a leak, but what an adapter can learn about which documents get cited): "
                      + ", ".join(f"{dataset} {share:.1%}" for dataset, share in shared) + ".", ""]
        lines += frontier_table(results, protocol)
        summary = comparison(results, protocol)
        if summary:
            lines += [f"### Where DIVE wins and where it does not ({protocol})", ""] + summary + [""]
    table = inflation(results)
    if table:
        lines += ["## How much the paper protocol inflates each method", "",
                  "nDCG@10 under the transductive paper protocol minus nDCG@10 held out, same method, dim and "
                  "seeds (the seeds both protocols have finished).", ""] + table
    figures = list(figures)
    if figures:
        lines += ["## Figures", ""] + [f"![{name}]({name})" for name in figures] + [""]
    lines += ["## Environment", ""] + environment(records, wall_seconds) + [""]
    return "\n".join(lines)
