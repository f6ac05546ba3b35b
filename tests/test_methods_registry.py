"""The method registry and the metadata each method declares, which the CLI, grid, reports and
figures read: a new method is one class plus one registry line (here: throw-away ones)."""

import json
from dataclasses import dataclass

import numpy as np
import pytest

from dive.cli import build_parser, main
from dive.data import PROTOCOLS
from dive.encode import save_embeddings
from dive.experiments import GridSpec, read_results, reproduce
from dive.experiments.plots import ndcg_by_dim
from dive.experiments.report import ablation_columns, every_column, main_columns, unsupervised_columns
from dive.methods import REGISTRY, Citation, Method, TorchAdapter, ablations_of, method_role, methods_with_role
from dive.methods.base import l2_normalize
from dive.quantize import CODECS
from dive.utils import machine
from helpers import synthetic_embeddings, write_beir

ROLES = ("reference", "baseline", "main", "ablation")


@dataclass(frozen=True)
class ScaledTruncateConfig:
    """Attributes:
        dim: leading dimensions kept.
    """

    dim: int = 8


class ScaledTruncate(Method):
    """A throw-away baseline: truncation after doubling every coordinate (the same rankings)."""

    name = "scaled-truncate"
    summary = "double, keep the first k dims, re-normalise"
    citation = Citation("A Throw-Away Baseline", "Nobody", "tests 2026")
    Config = ScaledTruncateConfig
    role = "baseline"
    supervised = False

    def _fit(self, train_set) -> None:
        """Nothing to learn."""

    def _transform(self, vectors: np.ndarray) -> np.ndarray:
        return l2_normalize(2 * vectors[:, : self.output_dim])


class ThrowAwayAblation(ScaledTruncate):
    """A throw-away ablation of DIVE (metadata is all the report reads)."""

    name = "dive-throw-away"
    summary = "DIVE with everything removed"
    role = "ablation"
    ablates = "dive"


@pytest.fixture()
def throw_away(monkeypatch):
    """Register both throw-away methods: one line each, as a new module would."""
    monkeypatch.setitem(REGISTRY, ScaledTruncate.name, ScaledTruncate)
    monkeypatch.setitem(REGISTRY, ThrowAwayAblation.name, ThrowAwayAblation)


@pytest.fixture()
def toy(tmp_path):
    dataset = write_beir(tmp_path / "toy", n_docs=60, n_queries=40)
    save_embeddings(synthetic_embeddings(60, 40, 16), tmp_path / "vectors")
    return dataset, tmp_path / "vectors"


def test_every_registered_method_declares_consistent_metadata():
    for name, cls in REGISTRY.items():
        assert cls.name == name and cls.role in ROLES and cls.summary
        assert (cls.role == "ablation") == (cls.ablates is not None)
        if cls.ablates is not None:
            assert method_role(cls.ablates) == "main"
        assert cls.trains == issubclass(cls, TorchAdapter) == ("train" in cls.Config.__dataclass_fields__)
        assert isinstance(cls.citation, Citation) or cls.role == "reference"
    assert methods_with_role("reference") == ["frozen"] and methods_with_role("main") == ["dive", "dive-anchored"]
    tunable = ["matryoshka-adaptor", "search-adaptor", "smec", "dive", "dive-anchored", "dive-no-contrast",
               "dive-single-head"]
    assert [name for name, cls in REGISTRY.items() if cls.tunable] == tunable
    assert all(cls.tunable == bool(cls.search_space) and (cls.supervised or not cls.tunable)
               for cls in REGISTRY.values())
    assert ablations_of("dive") == ["dive-no-contrast", "dive-single-head"]
    assert method_role("not-a-method") is None


def test_report_columns_follow_the_registry_as_the_tables_always_had():
    assert main_columns() == ["truncate", "pca", "autoencoder", "matryoshka-adaptor", "search-adaptor", "smec", "dive",
                              "dive-anchored"]
    assert ablation_columns() == ["dive", "dive-no-contrast", "dive-single-head", "dive-anchored"]
    assert unsupervised_columns() == ["truncate", "pca", "autoencoder", "dive", "dive-anchored"]
    assert every_column() == main_columns() + ["dive-no-contrast", "dive-single-head"]


def test_dive_methods_names_each_paper_without_pointing_at_developer_files(capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    assert '"DIVE: Embedding Compression via Self-Limiting Gradient Updates"' in out and "Dongfang Zhao" in out
    assert '"Search-Adaptor: Embedding Customization for Information Retrieval", ACL 2024' in out
    assert "SPEC" not in out and "shared/" not in out and "references" not in out


def test_codec_and_protocol_choices_are_the_librarys():
    def choices(parser, flag):
        found = []
        for action in parser._actions:
            if flag in action.option_strings:
                found.append(list(action.choices))
            for sub in getattr(action, "choices", None) or {}:
                if isinstance(action.choices, dict):
                    found += choices(action.choices[sub], flag)
        return found

    parser = build_parser()
    assert choices(parser, "--codec") and all(c == list(CODECS) for c in choices(parser, "--codec"))
    assert choices(parser, "--protocol") and all(c == list(PROTOCOLS) for c in choices(parser, "--protocol"))


def table_columns(report: str, title: str) -> list[str]:
    """The header cells of the table under ``### title``."""
    lines = report.split("\n")
    header = lines[lines.index(f"### {title}") + 2]
    return [cell.strip() for cell in header.strip("|").split("|")]


def test_a_throw_away_method_appears_in_every_table_figure_and_the_cli(throw_away, toy, tmp_path, capsys):
    dataset, vectors = toy
    spec = GridSpec(out=tmp_path / "grid", datasets=[str(dataset)], dims=[8], seeds=[0], protocols=["heldout"],
                    methods=["frozen", "truncate", "scaled-truncate", "dive", "dive-throw-away"],
                    vectors={str(dataset): str(vectors)},
                    overrides={"dive": {"hidden": 16, "train": {"epochs": 1, "progress": False}}})
    report = reproduce(spec).read_text()
    records = read_results(spec.out / "results.jsonl")
    assert {r["method"] for r in records} == {"frozen", "truncate", "scaled-truncate", "dive", "dive-throw-away"}
    assert {r["machine"] for r in records} == {machine()} and f"- machine: {machine()}" in report

    main_table = ["dataset", "frozen (full dim)", "truncate", "dive", "scaled-truncate"]  # registry order
    assert table_columns(report, "nDCG@10 at 8 dims") == main_table
    assert table_columns(report, "Recall@10 at 8 dims") == main_table
    assert table_columns(report, "Unsupervised baselines vs DIVE at 8 dims (nDCG@10)") == main_table
    assert table_columns(report, "Ablations at 8 dims (nDCG@10)") == [
        "dataset", "frozen (full dim)", "dive", "dive-throw-away"]
    assert table_columns(report, "Retention of frozen nDCG@10 at 8 dims") == ["dataset", *main_table[2:],
                                                                             "dive-throw-away"]
    assert table_columns(report, "Train seconds at 8 dims") == ["dataset", *main_table[2:], "dive-throw-away"]
    lines = ndcg_by_dim(records, "heldout", "toy")
    assert set(lines) == {"truncate", "scaled-truncate", "dive", "dive-throw-away"}
    assert list(lines["scaled-truncate"]) == [8]

    assert main(["train", "--dataset", str(dataset), "--vectors", str(vectors), "--method", "scaled-truncate",
                 "--dim", "8", "--json", "--out", str(tmp_path / "run")]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["method"] == "scaled-truncate" and record["dim"] == 8
    truncated = next(r for r in records if r["method"] == "truncate")
    assert record["metrics"] == pytest.approx(truncated["metrics"])  # doubling changes no ranking
    assert main(["methods"]) == 0
    assert 'scaled-truncate     [baseline, no labels, no training]' in capsys.readouterr().out


def test_a_supervised_baseline_stays_out_of_the_unsupervised_table(throw_away, monkeypatch):
    assert "scaled-truncate" in unsupervised_columns()
    monkeypatch.setattr(ScaledTruncate, "supervised", True)
    assert "scaled-truncate" in main_columns() and "scaled-truncate" not in unsupervised_columns()
