import json
import os
import re

import pytest

from dive.data import Embeddings
from dive.encode import save_embeddings
from dive.errors import DiveError
from dive.experiments import GridSpec, merge_results, read_results, reproduce
from dive.experiments import grid as grid_module
import dive.data
import dive.experiments.tune
from dive.methods import create_method, method_class


@pytest.fixture(scope="module")
def scifact_slice(scifact, tmp_path_factory):
    """A tiny real slice of scifact: 40 train + 20 test queries, their relevant docs + 300 others,
    with the real (cached) all-MiniLM-L6-v2 vectors."""
    dataset, embeddings = scifact
    root = tmp_path_factory.mktemp("slice")
    train = dict(sorted(dataset.qrels["train"].items())[:40])
    test = dict(sorted(dataset.qrels["test"].items())[:20])
    keep_docs = sorted({d for qrels in (train, test) for docs in qrels.values() for d in docs}
                       | set(dataset.doc_ids[:300]))
    keep_queries = sorted(set(train) | set(test))
    folder = root / "scifact"
    (folder / "qrels").mkdir(parents=True)
    with open(folder / "corpus.jsonl", "w") as handle:
        for doc_id in keep_docs:
            handle.write(json.dumps({"_id": doc_id, "title": "", "text": "x"}) + "\n")
    with open(folder / "queries.jsonl", "w") as handle:
        for query_id in keep_queries:
            handle.write(json.dumps({"_id": query_id, "text": "x"}) + "\n")
    for split, qrels in (("train", train), ("test", test)):
        rows = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t{s}" for q, docs in qrels.items() for d, s in docs.items()]
        (folder / "qrels" / f"{split}.tsv").write_text("\n".join(rows) + "\n")
    doc_row = {d: i for i, d in enumerate(embeddings.doc_ids)}
    query_row = {q: i for i, q in enumerate(embeddings.query_ids)}
    save_embeddings(Embeddings(keep_docs, embeddings.doc_vectors[[doc_row[d] for d in keep_docs]], keep_queries,
                               embeddings.query_vectors[[query_row[q] for q in keep_queries]]), root / "vectors")
    return folder, root / "vectors"


def mini_grid(folder, vectors, out):
    return GridSpec(out=out, datasets=[str(folder)], methods=["frozen", "truncate", "dive"], dims=[64], seeds=[0],
                    protocols=["heldout", "paper"], vectors={str(folder): str(vectors)},
                    overrides={"dive": {"hidden": 64, "train": {"epochs": 2, "progress": False}}})


def test_grid_resumes_without_recomputing_and_report_matches_results(scifact_slice, tmp_path, monkeypatch):
    folder, vectors = scifact_slice
    report = reproduce(mini_grid(folder, vectors, tmp_path))
    records = read_results(tmp_path / "results.jsonl")
    assert len(records) == 2 * 3  # 2 protocols x (frozen + truncate + dive)
    assert {(r["protocol"], r["method"]) for r in records} == {
        (p, m) for p in ("heldout", "paper") for m in ("frozen", "truncate", "dive")}

    calls = []
    monkeypatch.setattr(grid_module, "run_cells", lambda *a, **k: calls.append(a) or pytest.fail("recomputed"))
    reproduce(mini_grid(folder, vectors, tmp_path))
    assert calls == []
    assert read_results(tmp_path / "results.jsonl") == records

    text = report.read_text()
    assert "TRANSDUCTIVE" in text and "Held-out protocol" in text
    for record in records:
        if record["method"] != "frozen":
            assert f"{record['metrics']['ndcg@10']:.4f}" in text
            assert f"{record['metrics']['recall@10']:.4f}" in text
        assert f"{record['frozen_metrics']['ndcg@10']:.4f}" in text
    shown = {float(x) for x in re.findall(r"\d\.\d{4}", text)}
    computed = {round(v, 4) for r in records for key in ("metrics", "frozen_metrics") for v in r[key].values()}
    computed |= {round(r["metrics"]["ndcg@10"] - h["metrics"]["ndcg@10"], 4) for r in records for h in records}
    computed |= {round(v, 4) for r in records if "strict" in r for key in ("metrics", "frozen_metrics")
                 for v in r["strict"][key].values()}
    computed |= {round(abs(v), 4) for v in computed}
    assert shown <= computed | {0.0}, f"report shows numbers not in results.jsonl: {shown - computed}"
    selections = {(r["protocol"], r["method"]): r["selection"] for r in records}
    assert selections["heldout", "dive"]["rule"] == "validation" and selections["paper", "dive"]["rule"] == "last"
    assert selections["heldout", "truncate"] is None  # nothing trained, nothing selected
    assert "Model selection: best validation nDCG@10, the untrained start (epoch 0) included" in text
    assert "Model selection: fixed epochs, last kept (the paper protocol's rule" in text
    strict = next(r["strict"] for r in records if r["protocol"] == "heldout")
    assert "strict view" in text and "kept / dropped for a near-duplicate train query: " in text
    assert strict["n_test_queries"] + strict["near_duplicates_dropped"] == 20
    assert all("strict" not in r for r in records if r["protocol"] == "paper")
    for figure in ("training_dynamics.png", "ndcg_vs_dim_heldout.png", "heldout_vs_paper.png"):
        assert (tmp_path / figure).stat().st_size > 1000


def test_cells_run_seed_major_so_a_stopped_grid_leaves_whole_tables(tmp_path):
    spec = GridSpec(out=tmp_path, methods=["frozen", "truncate", "dive"], dims=[128, 256, 512], seeds=[0, 1, 2],
                    protocols=["heldout", "paper"])
    order = list(grid_module.cells(spec, input_dim=384))
    assert len(order) == len(set(order)) == 2 * (1 + 2 * 2 * 3)  # frozen once, dims below 384 only
    frozen = [cell for cell in order if cell[1] == "frozen"]
    assert frozen == [("heldout", "frozen", 384, 0), ("paper", "frozen", 384, 0)]
    seeds = [seed for *_, seed in order]
    assert seeds == sorted(seeds)
    first_seed = {(protocol, method, dim) for protocol, method, dim, seed in order if seed == 0}
    assert first_seed == {(p, m, d) for p in ("heldout", "paper") for m, d in
                          [("frozen", 384), *((m, d) for m in ("truncate", "dive") for d in (128, 256))]}


def test_a_torn_last_line_is_dropped_and_the_cell_rerun(scifact_slice, tmp_path):
    folder, vectors = scifact_slice
    spec = mini_grid(folder, vectors, tmp_path)
    spec.methods, spec.protocols = ["frozen", "truncate"], ["heldout"]
    reproduce(spec)
    path = tmp_path / "results.jsonl"
    lines = path.read_text().splitlines()
    path.write_text(lines[0] + "\n" + lines[1][: len(lines[1]) // 2])  # killed mid-write
    assert len(read_results(path)) == 1
    reproduce(spec)
    records = read_results(path)
    assert [r["method"] for r in records] == ["frozen", "truncate"]
    assert all(json.loads(line) for line in path.read_text().splitlines())


def test_a_folder_holds_one_models_cells(scifact_slice, tmp_path):
    """Cells are keyed without the model: resuming with other vectors must not mix the two."""
    import shutil

    folder, vectors = scifact_slice
    spec = mini_grid(folder, vectors, tmp_path / "grid")
    spec.methods, spec.protocols = ["frozen", "truncate"], ["heldout"]
    reproduce(spec)
    other = shutil.copytree(vectors, tmp_path / "other-model-vectors")
    spec.vectors = {str(folder): str(other)}
    before = (tmp_path / "grid" / "results.jsonl").read_bytes()
    with pytest.raises(DiveError, match=r"results.jsonl: its scifact cells were embedded with .*vectors, not "
                                        r".*other-model-vectors; use another --out"):
        reproduce(spec)
    assert (tmp_path / "grid" / "results.jsonl").read_bytes() == before


def test_a_second_grid_into_a_busy_folder_stops_before_any_work(scifact_slice, tmp_path):
    """Two processes on one folder would each redo the other's cells; the second must refuse."""
    import fcntl

    folder, vectors = scifact_slice
    out = tmp_path / "grid"
    out.mkdir()
    with open(out / grid_module.LOCK_FILE, "w") as held:
        held.write("pid 4242\n")
        held.flush()
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(DiveError, match=r"another dive reproduce \(pid 4242\) is running into this folder"):
            reproduce(mini_grid(folder, vectors, out))
        assert not (out / "results.jsonl").exists()
    spec = mini_grid(folder, vectors, out)
    spec.methods, spec.protocols = ["frozen"], ["heldout"]
    reproduce(spec)
    assert [r["method"] for r in read_results(out / "results.jsonl")] == ["frozen"]


def test_a_grid_split_by_method_merges_into_the_whole_grid(scifact_slice, tmp_path):
    folder, vectors = scifact_slice
    for name, methods in (("whole", ["frozen", "truncate", "pca"]), ("a", ["frozen", "truncate"]), ("b", ["pca"])):
        spec = mini_grid(folder, vectors, tmp_path / name)
        spec.methods, spec.protocols = methods, ["heldout"]
        reproduce(spec)
    merged = tmp_path / "merged"
    assert merge_results(merged, [tmp_path / "a" / "results.jsonl", tmp_path / "b" / "results.jsonl"]) == 3
    assert merge_results(merged, [tmp_path / "whole" / "results.jsonl"]) == 0

    def metrics(name):
        return {(r["method"], r["dim"]): r["metrics"] for r in read_results(tmp_path / name / "results.jsonl")}

    assert metrics("merged") == metrics("whole")


def test_merging_another_models_cells_or_a_missing_file_changes_nothing(scifact_slice, tmp_path):
    folder, vectors = scifact_slice
    spec = mini_grid(folder, vectors, tmp_path / "mine")
    spec.methods, spec.protocols = ["frozen"], ["heldout"]
    reproduce(spec)
    other = tmp_path / "other.jsonl"
    record = read_results(tmp_path / "mine" / "results.jsonl")[0]
    other.write_text(json.dumps({**record, "method": "truncate", "model": "some-other-model"}) + "\n")
    before = (tmp_path / "mine" / "results.jsonl").read_bytes()
    with pytest.raises(DiveError, match=r"other.jsonl: its scifact cells were embedded with some-other-model, "
                                        r"but .*results.jsonl's with"):
        merge_results(tmp_path / "mine", [other])
    with pytest.raises(DiveError, match="nope.jsonl: no such results file"):
        merge_results(tmp_path / "mine", [tmp_path / "nope.jsonl"])
    assert (tmp_path / "mine" / "results.jsonl").read_bytes() == before


def test_a_rerun_whose_settings_change_a_finished_cell_is_refused(scifact_slice, tmp_path, monkeypatch):
    """Issue 20, defect 5: a finished cell counts as done only with the settings that made its numbers;
    settings that change only what is shown (progress bars) do not matter, nor fields old records lack."""
    from dataclasses import replace

    from dive.data import MiningConfig

    folder, vectors = scifact_slice
    spec = mini_grid(folder, vectors, tmp_path)
    spec.protocols = ["heldout"]
    reproduce(spec)
    path = tmp_path / "results.jsonl"
    before = path.read_bytes()
    monkeypatch.setattr(grid_module, "run_cells", lambda *a, **k: pytest.fail("recomputed"))
    shown = replace(spec, overrides={"dive": {"hidden": 64, "train": {"epochs": 2, "progress": True}}})
    reproduce(shown)
    longer = replace(spec, epochs=3)
    with pytest.raises(DiveError, match=r"results.jsonl: its scifact heldout dive dim 64 seed 0 cell was run with "
                                        r"other settings \(config.train.epochs 2, now 3\); use another --out"):
        reproduce(longer)
    with pytest.raises(DiveError, match=r"scifact heldout frozen .* \(mining.negatives hard, now random\)"):
        reproduce(replace(spec, mining=MiningConfig(negatives="random")))
    assert path.read_bytes() == before
    old_style = [{key: value for key, value in record.items() if key not in ("mining", "split_config")}
                 for record in read_results(path)]  # as older dive versions wrote them
    path.write_text("".join(json.dumps(record) + "\n" for record in old_style))
    reproduce(spec)
    with pytest.raises(DiveError, match=r"config.train.epochs 2, now 3"):
        reproduce(longer)


def test_a_diverged_train_leaves_no_checkpoint_and_no_run_folder(tmp_path, monkeypatch):
    """Training that diverges after checkpointing two epochs: one line, and nothing of the run is left,
    while the user's own files in the checkpoint folder stay."""
    import dive.train
    from dive.experiments import ExperimentSpec, train_and_save
    from helpers import synthetic_embeddings, write_beir

    dataset = write_beir(tmp_path / "toy", n_docs=60, n_queries=40)
    save_embeddings(synthetic_embeddings(60, 40, 16), tmp_path / "vectors")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "keep.txt").write_text("the user's\n")
    real_run_epoch, calls = dive.train._run_epoch, {"n": 0}

    def diverge_in_epoch_3(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise dive.train.NonFiniteError("train dive, epoch 3: the training loss is not finite (loss = nan)")
        return real_run_epoch(*args, **kwargs)

    monkeypatch.setattr(dive.train, "_run_epoch", diverge_in_epoch_3)
    for checkpoint_dir in (None, str(mine)):
        calls["n"] = 0
        spec = ExperimentSpec(dataset=str(dataset), vectors=str(tmp_path / "vectors"), method="dive", dim=4,
                              overrides={"hidden": 8, "train": {"epochs": 4, "batch_size": 16, "progress": False}},
                              out=str(tmp_path / "runs" / "run"), checkpoint_dir=checkpoint_dir)
        with pytest.raises(DiveError, match="epoch 3: the training loss is not finite"):
            train_and_save(spec)
        assert calls["n"] == 3
        assert not (tmp_path / "runs").exists()
        assert sorted(path.name for path in mine.rglob("*")) == ["keep.txt"]


def test_a_variant_runs_beside_its_method_with_its_settings_and_gets_its_own_report_table(scifact_slice, tmp_path):
    folder, vectors = scifact_slice
    spec = GridSpec(out=tmp_path, datasets=[str(folder)], methods=["dive", "dive:margin=0.3+heads=2"], dims=[64],
                    seeds=[0], protocols=["heldout"], vectors={str(folder): str(vectors)},
                    overrides={"dive": {"hidden": 64, "train": {"epochs": 1, "progress": False}}})
    report = reproduce(spec).read_text()
    records = {r["method"]: r for r in read_results(tmp_path / "results.jsonl")}
    assert set(records) == {"dive", "dive:margin=0.3+heads=2"}
    variant, plain = records["dive:margin=0.3+heads=2"], records["dive"]
    assert variant["variant_of"] == "dive" and "variant_of" not in plain
    assert (variant["config"]["margin"], variant["config"]["heads"]) == (0.3, 2)
    assert variant["config"]["hidden"] == 64  # the grid's overrides of the method reach its variants
    assert (plain["config"]["margin"], plain["config"]["heads"]) != (0.3, 2)
    assert "### Variants of dive at 64 dims" in report
    from dive.experiments.plots import ndcg_by_dim
    assert set(ndcg_by_dim(list(records.values()), "heldout", plain["dataset"])) == {"dive"}  # one-dim ablations
    assert f"{variant['metrics']['ndcg@10']:.4f}" in report


def test_a_variant_of_an_unknown_method_or_with_a_malformed_setting_fails_before_any_work(tmp_path):
    with pytest.raises(DiveError, match="unknown method"):
        GridSpec(out=tmp_path, methods=["nope:margin=1"])
    with pytest.raises(DiveError, match="NAME=VALUE"):
        GridSpec(out=tmp_path, methods=["dive:margin"])
    with pytest.raises(DiveError, match="dive has no setting colour"):
        GridSpec(out=tmp_path, methods=["dive:colour=red"])


def test_a_corrupt_line_in_the_middle_is_an_error(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text('{"a": 1}\nnot json\n{"b": 2}\n')
    with pytest.raises(DiveError, match="results.jsonl:2: corrupt"):
        read_results(path)


def test_unknown_methods_fail_before_any_work(tmp_path):
    with pytest.raises(DiveError, match="unknown method"):
        GridSpec(out=tmp_path, methods=["nope"])


def test_a_preset_grid_takes_explicit_settings_and_training_settings_reach_every_adapter(tmp_path):
    spec = GridSpec.from_preset(tmp_path, "quick", train={"progress": False}, dims=[64], seeds=None)
    assert (spec.datasets, spec.dims, spec.seeds, spec.epochs) == (["scifact"], [64], [0], 25)
    assert spec.overrides["dive"] == {"train": {"progress": False}} and "truncate" not in spec.overrides
    assert GridSpec.from_preset(tmp_path).overrides == {}


@pytest.mark.parametrize("method", ["dive", "search-adaptor"])
def test_tune_uses_the_validation_slice_only_writes_a_reusable_config_and_resumes(scifact_slice, tmp_path, capsys,
                                                                                  method, monkeypatch):
    from dive.cli import main

    space = method_class(method).search_space
    folder, vectors = scifact_slice
    out = tmp_path / "tuned.json"
    argv = ["tune", "--dataset", str(folder), "--vectors", str(vectors), "--method", method, "--dim", "32",
            "--hidden", "32", "--epochs", "1", "--no-progress", "--out", str(out), "--json"]
    scored = []
    evaluate = dive.experiments.tune.evaluate_method
    monkeypatch.setattr(dive.experiments.tune, "evaluate_method",
                        lambda m, eval_set, *a: scored.append(set(eval_set.query_ids)) or evaluate(m, eval_set, *a))
    assert main([*argv, "--trials", "2"]) == 0
    assert main([*argv, "--trials", "3"]) == 0  # resumes the stored study: one more trial
    dataset = dive.data.load_beir(folder)
    split = dive.data.make_splits(dataset, "heldout")[0]
    assert scored and all(queries == set(split.validation) for queries in scored)  # never a test query
    assert not set(split.validation) & set(split.test)
    settings = json.loads(out.read_text())
    assert set(settings) == set(space)
    trials = json.loads(out.with_suffix(".trials.json").read_text())
    assert len(trials["trials"]) == 3 and len(scored) == 3 and trials["objective"] == "validation nDCG@10"
    defaults = create_method(method, "scifact").config
    assert all(trials["trials"][0][name] == getattr(defaults, name) for name in space)  # defaults tried first
    assert max(t["val_ndcg@10"] for t in trials["trials"]) == next(
        t["val_ndcg@10"] for t in trials["trials"] if all(t[k] == settings[k] for k in space))
    capsys.readouterr()
    record = json.loads(_run(main, capsys, ["train", "--dataset", str(folder), "--vectors", str(vectors),
                                            "--method", method, "--dim", "32", "--hidden", "32", "--epochs", "1",
                                            "--config", str(out), "--json", "--no-progress",
                                            "--out", str(tmp_path / "r")]))
    assert all(record["config"][k] == v for k, v in settings.items())


def _run(main, capsys, argv):
    assert main(argv) == 0
    return capsys.readouterr().out


def test_the_frontier_shows_one_row_per_method_dim_and_codec_with_the_mean_over_seeds():
    from dive.experiments.report import Results, frontier_table

    def record(method, codec, seed, ndcg, p):
        return {"protocol": "heldout", "dataset": "d", "method": method, "dim": 8, "seed": seed,
                "codec_label": codec, "codec": None, "bytes_per_vector": 8 if codec == "int8" else 32,
                "metrics": {"ndcg@10": ndcg, "recall@10": ndcg}, "frozen_metrics": {"ndcg@10": 0.5},
                "significance": {"vs_frozen": {"p": p, "significant": p < 0.05}}}

    records = [record("a", "int8", 0, 0.40, 0.01), record("a", "int8", 1, 0.50, 0.20),
               record("a", "none", 0, 0.30, 0.01), record("a", "none", 1, 0.30, 0.01)]
    text = "\n".join(frontier_table(Results(records), "heldout"))
    rows = [line for line in text.splitlines() if line.startswith("| a |")]
    assert len(rows) == 2  # one per (method, dim, codec), not one per seed
    assert "| 0.4500 ± 0.0707 | 0.2 |" in rows[0]  # mean ± std; the least significant seed's p, unmarked
    assert "0.3000 ± 0.0000 | 0.01 †" in rows[1]
    assert "Best nDCG@10 at <= 64 bytes per vector: a 8d + int8 (8 B): 0.4500." in text


def test_codec_cells_share_the_fitted_method_and_feed_the_frontier(scifact_slice, tmp_path):
    folder, vectors = scifact_slice
    spec = mini_grid(folder, vectors, tmp_path)
    spec.methods, spec.protocols = ["frozen", "truncate"], ["heldout"]
    spec.codecs = ["none", "int8", "binary:rescore=50"]
    report = reproduce(spec).read_text()
    records = read_results(tmp_path / "results.jsonl")
    assert len(records) == 2 * 3
    by_label = {(r["method"], r["codec_label"]): r for r in records}
    assert by_label[("frozen", "int8")]["bytes_per_vector"] == 384
    assert by_label[("truncate", "binary:rescore=50")]["bytes_per_vector"] == 8
    assert by_label[("truncate", "none")]["bytes_per_vector"] == 4 * 64
    best = max((r for r in records if r["bytes_per_vector"] <= 64), key=lambda r: r["metrics"]["ndcg@10"])
    assert "Storage frontier" in report
    assert "| binary:rescore=50 | no database: Qdrant, pgvector and sentence-transformers binarise at zero" in report
    assert "| int8 | dive's own rounding" in report  # which database setting each codec equals
    assert (f"Best nDCG@10 at <= 64 bytes per vector: {best['method']} {best['dim']}d + {best['codec_label']} "
            f"({best['bytes_per_vector']:g} B): {best['metrics']['ndcg@10']:.4f}") in report
    assert (tmp_path / "frontier_heldout.png").exists()
    # codec cells never leak into the float tables: frozen's row shows the float number
    assert f"| {by_label[('frozen', 'none')]['frozen_metrics']['ndcg@10']:.4f} |" in report


def _record(protocol, method, seed, ndcg, dim=128):
    metrics = {"ndcg@10": ndcg, "recall@10": ndcg}
    frozen = {"ndcg@10": 0.6, "recall@10": 0.6}
    return {"dataset": "toy", "protocol": protocol, "method": method, "dim": dim, "input_dim": 384, "seed": seed,
            "metrics": metrics, "frozen_metrics": frozen, "retention": {k: v / 0.6 for k, v in metrics.items()},
            "train_seconds": 1.0, "wall_seconds": 1.0, "config": {}, "codec_label": "none", "bytes_per_vector": 4.0 * dim}


def test_report_marks_cells_with_fewer_seeds_and_inflation_compares_the_same_seeds():
    from dive.experiments.report import build_report

    records = [_record("heldout", "dive", seed, ndcg) for seed, ndcg in enumerate([0.50, 0.52, 0.54])]
    records += [_record("heldout", "truncate", 0, 0.45), _record("paper", "dive", 0, 0.90)]
    report = build_report(records)
    assert "| toy | 0.6000 | 0.4500 (n=1) | **0.5200 ± 0.0200** |" in report
    # inflation uses seed 0 only, the one seed both protocols have: 0.90 - 0.50
    assert "| toy | dive | 128 | 1 | 0.5000 | 0.9000 | +0.4000 |" in report


def test_report_names_the_embedding_model_of_each_dataset():
    from dive.experiments.report import build_report

    records = [dict(_record("heldout", "dive", 0, 0.5), model="all-mpnet-base-v2"),
               dict(_record("heldout", "dive", 0, 0.5), dataset="other", model="all-MiniLM-L6-v2")]
    report = build_report(records)
    assert "Frozen embeddings: all-MiniLM-L6-v2 for other; all-mpnet-base-v2 for toy." in report


def test_environment_names_the_machines_the_cells_ran_on_not_this_one():
    from dive.experiments.report import environment

    def record(**extra):
        return {"config": {}, "wall_seconds": 60.0, **extra}

    assert environment([record(machine="x86_64, cpu, 2 cores, Linux 6.1")], None)[0] == \
        "- machine: x86_64, cpu, 2 cores, Linux 6.1"
    assert environment([record()], None)[0] == "- machine: not recorded"
    assert environment([record(machine="b"), record(machine="a"), record()], None)[0] == \
        "- machines: a; b; not recorded"


def test_a_results_line_that_is_not_an_object_or_a_folder_in_its_place_is_an_error(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text('{"a": 1}\n[1, 2]\n')
    with pytest.raises(DiveError, match=r"results.jsonl:2: expected a JSON object"):
        read_results(path)
    path.unlink()
    path.mkdir()
    with pytest.raises(DiveError, match="results.jsonl: not a file"):
        read_results(path)


def test_a_refused_run_leaves_no_folder_or_lock_it_made_and_a_finished_one_keeps_its_lock(tmp_path):
    from dive.experiments.store import folder_lock

    for out in (tmp_path / "new", tmp_path / "users"):
        (tmp_path / "users").mkdir(exist_ok=True)
        with pytest.raises(DiveError, match="refused"):
            with folder_lock(out):
                raise DiveError("refused")
    assert [path.name for path in tmp_path.iterdir()] == ["users"] and not any((tmp_path / "users").iterdir())
    with folder_lock(tmp_path / "new"):
        (tmp_path / "new" / "results.jsonl").write_text("")
    assert sorted(path.name for path in (tmp_path / "new").iterdir()) == [grid_module.LOCK_FILE, "results.jsonl"]


def test_a_lock_file_removed_by_its_holder_is_not_taken_as_a_lock(tmp_path, monkeypatch):
    """A run that opened the lock file just before its holder removed it (on a refusal) must lock
    the file now at the path, or two runs could hold 'the' lock at once."""
    from dive.experiments import store

    out = tmp_path / "grid"
    out.mkdir()
    (out / store.LOCK_FILE).write_text("pid 1\n")
    opened = []
    real_open = open

    def open_then_holder_removes(path, *args, **kwargs):
        handle = real_open(path, *args, **kwargs)
        if not opened:
            os.unlink(path)  # the holder's refusal removes it between our open and our flock
        opened.append(handle)
        return handle

    monkeypatch.setattr(store, "open", open_then_holder_removes, raising=False)
    with store.folder_lock(out):
        assert len(opened) == 2 and os.path.samestat(os.fstat(opened[1].fileno()), os.stat(out / store.LOCK_FILE))


def _tested(record, p):
    return dict(record, significance={"vs_frozen": {"test": "student", "metric": "ndcg@10", "p": p,
                                                    "significant": p < 0.05, "alpha": 0.05, "wins": 1, "ties": 0,
                                                    "losses": 0, "n_queries": 10}})


def test_report_marks_cells_that_differ_significantly_from_frozen_and_says_what_unmarked_means():
    from dive.experiments.report import SIGNIFICANCE_LEGEND, SIGNIFICANCE_MARK, build_report

    records = [_tested(_record("heldout", "dive", 0, 0.52), 0.001), _tested(_record("heldout", "pca", 0, 0.59), 0.4),
               _record("heldout", "truncate", 0, 0.45)]  # an old record: no test, no mark
    report = build_report(records)
    assert SIGNIFICANCE_LEGEND in report
    # columns truncate (no test), pca (p = 0.4), dive (p = 0.001)
    assert f"| toy | 0.6000 | 0.4500 | **0.5900** | 0.5200 {SIGNIFICANCE_MARK} |" in report
    # Recall tables carry no mark: the test is on nDCG@10
    assert "| toy | 0.6000 | 0.4500 | **0.5900** | 0.5200 |" in report
    # a cell is marked only when every seed's test is significant
    two_seeds = [_tested(_record("heldout", "dive", 0, 0.50), 0.001), _tested(_record("heldout", "dive", 1, 0.52), 0.2)]
    assert f"0.5100 ± 0.0141 {SIGNIFICANCE_MARK}" not in build_report(two_seeds)


def test_every_cell_records_its_paired_test_against_frozen(tmp_path):
    from dive.experiments import ExperimentSpec, run_experiment
    from helpers import synthetic_embeddings, write_beir

    dataset = write_beir(tmp_path / "toy", n_docs=60, n_queries=40)
    save_embeddings(synthetic_embeddings(60, 40, 16), tmp_path / "vectors")
    spec = ExperimentSpec(dataset=str(dataset), vectors=str(tmp_path / "vectors"), method="truncate", dim=4)
    record = run_experiment(spec)
    test = record["significance"]["vs_frozen"]
    assert test["test"] == "student" and 0 <= test["p"] <= 1 and test["n_queries"] == 20
    assert test["wins"] + test["ties"] + test["losses"] == 20
    assert "significance" not in run_experiment(ExperimentSpec(dataset=str(dataset), vectors=str(tmp_path / "vectors"),
                                                               method="frozen"))
    binary = run_experiment(ExperimentSpec(dataset=str(dataset), vectors=str(tmp_path / "vectors"), method="frozen",
                                           codec="binary"))
    assert binary["significance"]["vs_frozen"]["n_queries"] == 20
