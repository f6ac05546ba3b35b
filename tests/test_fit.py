"""``dive fit`` (issue 22): candidates within a budget, the choice on validation, the proof on test."""

import json
from dataclasses import replace

import numpy as np
import pytest

import dive.experiments.fit as fit_module
from dive.cli import main
from dive.data import Embeddings
from dive.encode import save_embeddings
from dive.errors import DiveError
from dive.experiments.fit import FitConfig, choose, enumerate_candidates, fit
from dive.experiments.run import ExperimentSpec
from dive.pipeline import Pipeline
from helpers import synthetic_embeddings, write_beir

FAST = {"train": {"epochs": 2, "progress": False}}
"""Two epochs: the trained candidates' numbers do not matter here, only what fit does with them."""

SMALL = FitConfig(budget=16, methods=("frozen", "truncate", "pca", "matryoshka-adaptor"), dims=(4, 8),
                  codecs=("none", "int8", "binary"), progress=False, workers=1)
"""In this process (the tests watch what it calls); the CLI tests run the default workers."""


@pytest.fixture()
def toy(tmp_path):
    """A BEIR folder with train and test qrels plus its vectors (no text encoding)."""
    dataset = write_beir(tmp_path / "toy", n_docs=60, n_queries=40)
    save_embeddings(synthetic_embeddings(60, 40, 16), tmp_path / "vectors")
    return ExperimentSpec(dataset=str(dataset), vectors=str(tmp_path / "vectors"), overrides=FAST)


def test_candidates_are_every_combination_within_the_budget():
    candidates = enumerate_candidates(FitConfig(budget=32, methods=("frozen", "truncate"), dims=(4, 8, 16, 64),
                                                codecs=("none", "int8", "binary", "pq")), input_dim=16, n_docs=60)
    labels = {candidate.label for candidate in candidates}
    assert labels == {"frozen-16-int8", "frozen-16-binary", "truncate-4-none", "truncate-4-int8",
                      "truncate-4-binary", "truncate-8-none", "truncate-8-int8", "truncate-8-binary"}
    assert all(candidate.bytes_per_vector <= 32 for candidate in candidates)
    # pq needs 256 corpus vectors for its centroids: with 60 it is no candidate; with enough it is 16 bytes
    many = enumerate_candidates(FitConfig(budget=16, methods=("frozen",), codecs=("pq",)), input_dim=16, n_docs=300)
    assert [(c.label, c.bytes_per_vector) for c in many] == [("frozen-16-pq", 16.0)]
    with pytest.raises(DiveError, match="measured after encoding"):  # no size to hold against a budget
        FitConfig(budget=64, codecs=("lossless",))
    with pytest.raises(DiveError, match="choose none"):
        FitConfig(budget=64, codecs=("zip",))
    with pytest.raises(DiveError, match="unknown method"):
        FitConfig(budget=64, methods=("nope",))


def test_a_budget_no_candidate_fits_is_one_line_exit_2_and_nothing_written(toy, tmp_path, capsys):
    out = tmp_path / "nothing"
    assert main(["fit", "--dataset", toy.dataset, "--vectors", toy.vectors, "--budget", "0.5",
                 "--out", str(out), "--no-progress"]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("dive: error: no candidate fits the budget of 0.5 bytes per vector")
    assert "the smallest is" in error
    assert not out.exists()
    with pytest.raises(SystemExit) as exited:  # argparse refuses it before dive runs
        main(["fit", "--dataset", toy.dataset, "--budget", "0", "--out", str(out)])
    assert exited.value.code == 2
    assert "argument --budget: must be above 0, got 0.0" in capsys.readouterr().err
    assert not out.exists()


def _record(label, method, score, size, free):
    return {"label": label, "method": method, "dim": 8, "bytes_per_vector": size, "training_free": free,
            "validation": {"ndcg@10": score}}


def test_the_choice_is_the_best_validation_score_ties_to_fewer_bytes_then_the_simpler_method():
    pca = _record("pca", "pca", 0.5, 16, True)
    adaptor = _record("adaptor", "matryoshka-adaptor", 0.6, 16, False)
    chosen, floor, why = choose([pca, adaptor])
    assert chosen is adaptor and floor is pca and "above the best training-free" in why
    smaller = _record("adaptor-small", "matryoshka-adaptor", 0.6, 8, False)
    assert choose([pca, adaptor, smaller])[0] is smaller
    truncate = _record("truncate", "truncate", 0.6, 8, True)
    assert choose([adaptor, smaller, truncate, pca])[0] is truncate  # a tie goes to the training-free method


def test_never_below_the_best_training_free_candidate(toy, tmp_path, monkeypatch):
    """Trained candidates that validate worse than a training-free one are never chosen, end to end."""
    fit_group = fit_module.fit_group

    def hurt_trained(*args, **kwargs):
        for record in fit_group(*args, **kwargs):
            if not record["training_free"]:
                record["validation"] = {name: value * 0.5 for name, value in record["validation"].items()}
            yield record

    monkeypatch.setattr(fit_module, "fit_group", hurt_trained)
    result = fit(toy, SMALL, tmp_path / "out")
    best_free = max(c["validation"]["ndcg@10"] for c in result["candidates"] if c["training_free"])
    chosen = next(c for c in result["candidates"] if c["label"] == result["choice"]["label"])
    assert chosen["training_free"] and chosen["validation"]["ndcg@10"] == best_free
    assert result["choice"]["best_training_free"] == chosen["label"]
    assert "no trained candidate beat it" in (tmp_path / "out" / "fit.md").read_text()


def test_resume_after_a_kill_refits_only_what_was_not_finished(toy, tmp_path, monkeypatch):
    out = tmp_path / "out"
    fitted = []
    real_build = fit_module.build_method

    def counting_build(spec, dataset_name):
        fitted.append((spec.method, spec.dim))
        return real_build(spec, dataset_name)

    monkeypatch.setattr(fit_module, "build_method", counting_build)
    append = fit_module.append_result
    appended = []

    def killed_after_five(path, record):
        if len(appended) == 5:
            raise KeyboardInterrupt  # as Ctrl-C or SIGTERM (which the CLI turns into an exit) mid-fit
        append(path, record)
        appended.append(record["label"])

    monkeypatch.setattr(fit_module, "append_result", killed_after_five)
    with pytest.raises(KeyboardInterrupt):
        fit(toy, SMALL, out)
    assert not (out / "fit.json").exists() and not (out / "pipeline").exists()
    with open(out / fit_module.CANDIDATES_FILE, "a") as handle:
        handle.write('{"torn": ')  # a line cut short by the kill
    monkeypatch.setattr(fit_module, "append_result", append)
    fitted.clear()
    resumed = fit(toy, SMALL, out)
    groups = {}
    for candidate in resumed["candidates"]:
        groups.setdefault((candidate["method"], candidate["dim"]), []).append(candidate["label"])
    finished = {group for group, labels in groups.items() if set(labels) <= set(appended)}
    assert finished  # the kill came after whole groups had finished
    assert set(fitted) == set(groups) - finished  # those are never fitted again, every other group is
    labels = [c["label"] for c in resumed["candidates"]]
    assert len(labels) == len(set(labels)) == len(fit_module.read_results(out / fit_module.CANDIDATES_FILE))
    fresh = fit(toy, SMALL, tmp_path / "fresh")
    assert [c["validation"]["ndcg@10"] for c in fresh["candidates"]] == pytest.approx(
        [c["validation"]["ndcg@10"] for c in resumed["candidates"]])
    assert fresh["choice"]["label"] == resumed["choice"]["label"]


def test_no_test_query_is_touched_before_the_choice(toy, tmp_path, monkeypatch):
    test_ids = {f"q{i}" for i in range(20, 40)}  # write_beir: the second half of the queries is the test split
    events = []
    real_queries, real_choose = Embeddings.queries, fit_module.choose

    def watched_queries(self, query_ids):
        events.append(("queries", set(query_ids)))
        return real_queries(self, query_ids)

    def watched_choose(records):
        events.append(("choice", None))
        return real_choose(records)

    monkeypatch.setattr(Embeddings, "queries", watched_queries)
    monkeypatch.setattr(fit_module, "choose", watched_choose)
    fit(toy, SMALL, tmp_path / "out")
    choice_at = events.index(("choice", None))
    before = set().union(*(ids for kind, ids in events[:choice_at] if kind == "queries"))
    after = set().union(*(ids for kind, ids in events[choice_at + 1:] if kind == "queries"))
    assert before and not before & test_ids  # train and validation queries only
    assert after == test_ids  # the proof scores every test query
    data = fit_module.split_for_fit(toy, fit_module.load_data(toy))
    assert all(not split.test for split in data.splits)
    with pytest.raises(DiveError, match="only after the choice"):
        data.test_qrels()


def test_json_prints_every_candidate_the_choice_and_the_test_result(toy, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["fit", "--dataset", toy.dataset, "--vectors", toy.vectors, "--budget", "16", "--dims", "4,8",
                 "--methods", "frozen,truncate,pca", "--codecs", "none,int8,binary", "--out", str(out),
                 "--json", "--no-progress", "--stat-test", "fisher"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("\n") == 1
    result = json.loads(printed)
    assert result == json.loads((out / "fit.json").read_text())
    for candidate in result["candidates"]:
        assert {"method", "dim", "codec", "bytes_per_vector", "validation", "train_seconds"} <= set(candidate)
        assert candidate["bytes_per_vector"] <= 16 and set(candidate["validation"]) == {"ndcg@10", "recall@10"}
    assert {"label", "method", "dim", "codec", "bytes_per_vector", "why"} <= set(result["choice"])
    test = result["test"]
    assert test["n_test_queries"] == 20 and set(test["interval"]["chosen"]) >= {"mean", "low", "high", "confidence"}
    assert test["interval"]["chosen"]["low"] <= test["metrics"]["chosen"]["ndcg@10"] <= \
        test["interval"]["chosen"]["high"]
    assert test["tests"]["vs frozen"]["test"] == "fisher" and 0 <= test["tests"]["vs frozen"]["p"] <= 1
    # ranx and pytrec_eval agree on the chosen pipeline's nDCG@10
    assert test["ranx_cross_check"]["max_abs_difference"] < 1e-6
    assert test["tests"]["vs frozen"]["ranx_mean_b"] == pytest.approx(test["metrics"]["frozen"]["ndcg@10"], abs=1e-6)
    assert result["pipeline"] == ["pipeline"]
    pipeline = Pipeline.load(out / "pipeline")
    assert pipeline.bytes_per_vector == result["choice"]["bytes_per_vector"]
    report = (out / "fit.md").read_text()
    for heading in ("## Candidates (validation)", "## Choice", "## Test result", "## What to expect"):
        assert heading in report


def test_own_vectors_and_one_qrels_file_fit_by_kfold(tmp_path, capsys):
    embeddings = synthetic_embeddings(60, 40, 16)
    save_embeddings(embeddings, tmp_path / "mine")
    qrels = tmp_path / "qrels.tsv"
    qrels.write_text("".join(f"q{i}\td{i}\t1\n" for i in range(40)))
    out = tmp_path / "out"
    assert main(["fit", "--vectors", str(tmp_path / "mine"), "--qrels", str(qrels), "--budget", "8",
                 "--methods", "truncate,pca", "--dims", "4,8", "--out", str(out), "--json", "--no-progress",
                 "--workers", "2"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["splits"] == [f"fold-{i}" for i in range(1, 6)] and result["test"]["n_test_queries"] == 40
    assert all(len(candidate["saved"]) == 5 for candidate in result["candidates"])
    assert sorted(p.name for p in (out / "pipeline").iterdir()) == [f"fold-{i}" for i in range(1, 6)]
    assert result["pipeline"] == [f"pipeline/fold-{i}" for i in range(1, 6)]
    assert main(["fit", "--vectors", str(tmp_path / "mine"), "--budget", "8", "--out", str(out)]) == 2
    assert "--vectors DIR with --qrels FILE" in capsys.readouterr().err


def test_paired_test_matches_pytrec_eval_even_with_tied_scores():
    from dive.evaluate import per_query_scores
    from dive.significance import paired_test, t_interval

    rng = np.random.default_rng(0)
    qrels = {f"q{i}": {f"d{i}": 1, f"d{i + 1}": 2} for i in range(30)}
    tied = {q: {f"d{j}": float(rng.integers(0, 3)) for j in range(40)} for q in qrels}  # many ties
    other = {q: {f"d{j}": float(rng.random()) for j in range(40)} for q in qrels}
    test = paired_test(qrels, tied, other)
    assert test["ranx_mean_a"] == pytest.approx(np.mean(list(per_query_scores(tied, qrels).values())), abs=1e-9)
    assert test["ranx_mean_b"] == pytest.approx(np.mean(list(per_query_scores(other, qrels).values())), abs=1e-9)
    assert paired_test(qrels, tied, tied)["p"] == 1.0
    interval = t_interval([0.0, 1.0, 0.5, 0.5])
    assert interval.mean == 0.5 and interval.low < 0.5 < interval.high
    assert interval.high - 0.5 == pytest.approx(3.182446 * np.std([0, 1, 0.5, 0.5], ddof=1) / 2, rel=1e-5)


def test_workers_side_by_side_give_the_same_candidates_and_choice(toy, tmp_path):
    alone = fit(toy, SMALL, tmp_path / "alone")
    together = fit(toy, FitConfig(**{**SMALL.__dict__, "workers": 2}), tmp_path / "together")
    assert [(c["label"], c["validation"]) for c in together["candidates"]] == \
        [(c["label"], c["validation"]) for c in alone["candidates"]]
    assert together["choice"] == alone["choice"] and together["test"]["metrics"] == alone["test"]["metrics"]


def test_export_writes_the_shipped_form_beside_the_pipeline(toy, tmp_path):
    pytest.importorskip("onnxruntime")
    config = FitConfig(budget=16, methods=("pca",), dims=(8,), codecs=("int8",), progress=False, workers=1)
    result = fit(toy, config, tmp_path / "out", export="onnx")
    assert result["export"] == {"format": "onnx", "path": str(tmp_path / "out" / "pipeline.onnx")}
    assert (tmp_path / "out" / "pipeline.onnx").is_file()
    with pytest.raises(DiveError, match="--export st needs --model"):  # own vectors: which model made them?
        fit(toy, config, tmp_path / "st", export="st")
    assert not (tmp_path / "st").exists()


@pytest.mark.real_data
def test_export_st_appends_the_chosen_pipeline_to_the_model_that_made_the_vectors(scifact, tmp_path):
    from sentence_transformers import SentenceTransformer

    from conftest import require_shared_data
    spec = ExperimentSpec(dataset=str(require_shared_data("scifact")), overrides=FAST)
    config = FitConfig(budget=64, methods=("pca",), dims=(64,), codecs=("int8",), progress=False, workers=1)
    result = fit(spec, config, tmp_path / "out", export="st")
    folder = tmp_path / "out" / "sentence-transformers"
    assert result["export"]["path"] == str(folder)
    model = SentenceTransformer(str(folder), trust_remote_code=True, device="cpu")
    texts = ["Vitamin D deficiency raises the risk of fractures."]
    codes = model.encode(texts)
    pipeline = Pipeline.load(tmp_path / "out" / "pipeline")
    assert codes.shape == (1, 64) and codes.dtype == np.uint8  # the stored int8 codes, as the fit chose them
    floats = model.encode(texts, output_value="float_embedding")
    assert np.array_equal(codes, pipeline.codec.encode(np.asarray(floats, dtype=np.float32)))


def test_a_fit_killed_with_sigkill_resumes_without_refitting_finished_candidates(toy, tmp_path, monkeypatch):
    """A real ``kill -9`` of ``dive fit`` (two workers) once some candidates are stored; the rerun keeps them."""
    import os
    import signal
    import time

    from cli_harness import start_cli

    out = tmp_path / "out"
    argv = ["fit", "--dataset", toy.dataset, "--vectors", toy.vectors, "--budget", "64", "--methods",
            "truncate,matryoshka-adaptor,dive-anchored", "--dims", "2,4,6,8,10,12", "--codecs", "int8",
            "--no-progress", "--out", str(out), "--workers", "2"]
    process = start_cli(argv)
    stored = out / fit_module.CANDIDATES_FILE
    deadline = time.monotonic() + 120
    while process.poll() is None and time.monotonic() < deadline:
        if stored.exists() and stored.read_text().count("\n") >= 1:
            break
        time.sleep(0.01)
    if process.poll() is not None:
        pytest.skip("the fit finished before it could be killed")
    process.send_signal(signal.SIGKILL)
    process.wait()
    before = [json.loads(line) for line in stored.read_text().splitlines() if line.strip().endswith("}")]
    assert before and not (out / "fit.json").exists()
    time.sleep(0.5)  # workers die with their parent (PR_SET_PDEATHSIG): nothing writes into OUT any more
    snapshot = sorted(str(p) for p in out.rglob("*"))
    time.sleep(0.5)
    assert sorted(str(p) for p in out.rglob("*")) == snapshot
    fitted = []
    real_build = fit_module.build_method
    monkeypatch.setattr(fit_module, "build_method", lambda spec, name: fitted.append((spec.method, spec.dim))
                        or real_build(spec, name))
    config = FitConfig(budget=64, methods=("truncate", "matryoshka-adaptor", "dive-anchored"),
                       dims=(2, 4, 6, 8, 10, 12), codecs=("int8",), progress=False, workers=1)
    result = fit(replace(toy, overrides={}), config, out)
    finished = {(record["method"], record["dim"]) for record in before}
    assert not finished & set(fitted)  # one codec per group: every stored candidate is a finished group
    assert len(result["candidates"]) == 18 and len(set(fitted)) == 18 - len(finished)
    assert os.path.exists(out / "fit.json")
