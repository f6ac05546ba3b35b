import json
import os
import subprocess
import sys

import numpy as np
import pytest

from dive.cli import main
from dive.encode import save_embeddings
from helpers import synthetic_embeddings, write_beir

REQUIRED_KEYS = {"dataset", "method", "dim", "protocol", "seed", "n_train_triplets", "n_test_queries", "metrics",
                 "frozen_metrics", "retention", "train_seconds", "epochs", "config", "versions", "codec",
                 "bytes_per_vector"}


@pytest.fixture()
def toy(tmp_path):
    """A BEIR folder plus a matching vectors folder (no text encoding needed)."""
    dataset = write_beir(tmp_path / "toy", n_docs=60, n_queries=40)
    save_embeddings(synthetic_embeddings(60, 40, 16), tmp_path / "vectors")
    return ["--dataset", str(dataset), "--vectors", str(tmp_path / "vectors")]


def run_json(capsys, argv):
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1  # exactly one JSON object on stdout
    return json.loads(out)


def test_train_prints_one_json_object_with_the_documented_fields(toy, tmp_path, capsys):
    record = run_json(capsys, ["train", *toy, "--method", "dive", "--dim", "8", "--hidden", "32", "--epochs", "3",
                               "--batch-size", "16", "--seed", "3", "--json", "--no-progress",
                               "--out", str(tmp_path / "run")])
    assert REQUIRED_KEYS <= set(record)
    assert (record["method"], record["dim"], record["protocol"], record["seed"]) == ("dive", 8, "heldout", 3)
    assert set(record["metrics"]) == {"ndcg@10", "recall@10"}
    assert [e["epoch"] for e in record["epochs"]] == [1, 2, 3]
    assert {"loss", "loss_triplet", "loss_contrast", "active_ratio"} <= set(record["epochs"][0])
    assert record["config"]["train"]["seed"] == 3 and record["config"]["hidden"] == 32
    assert json.loads((tmp_path / "run" / "result.json").read_text())["metrics"] == record["metrics"]
    assert record["codec"] is None and record["bytes_per_vector"] == 4 * 8
    # the saved pipeline, and the bare method folder inside it, evaluate to the same numbers
    for folder in (tmp_path / "run", tmp_path / "run" / "method"):
        again = run_json(capsys, ["evaluate", *toy, "--load", str(folder), "--json"])
        assert again["metrics"] == pytest.approx(record["metrics"])


def test_codecs_report_bytes_per_vector_and_ship_inside_the_pipeline(toy, tmp_path, capsys):
    record = run_json(capsys, ["train", *toy, "--method", "truncate", "--dim", "8", "--codec", "int8", "--json",
                               "--out", str(tmp_path / "run")])
    assert record["codec"]["name"] == "int8" and record["bytes_per_vector"] == 8
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["codec", "method", "pipeline.json", "result.json"]
    again = run_json(capsys, ["evaluate", *toy, "--load", str(tmp_path / "run"), "--json"])
    assert again["codec"]["name"] == "int8" and again["metrics"] == pytest.approx(record["metrics"])
    binary = run_json(capsys, ["evaluate", *toy, "--method", "frozen", "--codec", "binary", "--rescore", "20",
                               "--json"])
    assert binary["codec"]["config"]["rescore"] == 20 and binary["bytes_per_vector"] == 2
    assert main(["evaluate", *toy, "--method", "frozen", "--codec", "int8", "--rescore", "5"]) == 2
    assert "--rescore applies to --codec binary only" in capsys.readouterr().err


def test_evaluate_frozen_needs_no_training(toy, capsys):
    record = run_json(capsys, ["evaluate", *toy, "--method", "frozen", "--json"])
    assert record["dim"] == 16 and record["train_seconds"] < 1
    assert record["metrics"] == record["frozen_metrics"]
    assert record["retention"]["ndcg@10"] == 1.0


def test_kfold_on_a_test_only_dataset_reports_fold_means(tmp_path, capsys):
    dataset = write_beir(tmp_path / "toy", n_docs=60, n_queries=40, splits=("test",))
    save_embeddings(synthetic_embeddings(60, 40, 16), tmp_path / "vectors")
    record = run_json(capsys, ["train", "--dataset", str(dataset), "--vectors", str(tmp_path / "vectors"),
                               "--method", "truncate", "--dim", "8", "--json", "--k", "5", "--out", str(tmp_path / "r")])
    assert len(record["folds"]) == 5 and record["n_test_queries"] == 40
    for name in ("ndcg@10", "recall@5"):
        assert record["metrics"][name] == pytest.approx(np.mean([f["metrics"][name] for f in record["folds"]]))


def test_paper_protocol_is_labelled_transductive(toy, tmp_path, capsys):
    record = run_json(capsys, ["train", *toy, "--method", "truncate", "--dim", "8", "--protocol", "paper", "--json",
                               "--out", str(tmp_path / "r")])
    assert "transductive" in record["protocol_label"]


def test_train_from_the_cli_and_from_python_saves_the_same_run_folder(toy, tmp_path, capsys, monkeypatch):
    """`dive train` calls train_and_save: same default folder runs/<cell>, same files and record keys,
    checkpoints removed once the run is saved."""
    from dive.experiments import ExperimentSpec, train_and_save

    def files(root):
        return sorted(str(path.relative_to(root)) for path in root.rglob("*"))

    run = "runs/toy-dive-8-heldout-seed1"
    for side in ("cli", "python"):
        (tmp_path / side).mkdir()
    monkeypatch.chdir(tmp_path / "cli")
    from_cli = run_json(capsys, ["train", *toy, "--method", "dive", "--dim", "8", "--hidden", "16", "--epochs", "2",
                                 "--seed", "1", "--json", "--no-progress"])
    monkeypatch.chdir(tmp_path / "python")
    from_python = train_and_save(ExperimentSpec(dataset=toy[1], vectors=toy[3], method="dive", dim=8, seed=1,
                                                overrides={"hidden": 16, "train": {"epochs": 2, "progress": False}}))
    assert from_cli["saved_to"] == from_python["saved_to"] == [run]
    assert set(from_cli) == set(from_python) and from_cli["config"] == from_python["config"]
    assert from_cli["metrics"] == pytest.approx(from_python["metrics"])
    assert files(tmp_path / "cli") == files(tmp_path / "python")
    assert (tmp_path / "cli" / run / "result.json").exists() and not (tmp_path / "cli" / run / "checkpoints").exists()


def test_config_file_and_set_flags_reach_the_method(toy, tmp_path, capsys):
    config = tmp_path / "tuned.json"
    config.write_text(json.dumps({"margin": 0.3, "heads": 2, "train": {"epochs": 1}}))
    record = run_json(capsys, ["train", *toy, "--dim", "8", "--hidden", "16", "--config", str(config),
                               "--set", "temperature=0.05", "--json", "--no-progress", "--out", str(tmp_path / "r")])
    assert (record["config"]["margin"], record["config"]["heads"], record["config"]["temperature"]) == (0.3, 2, 0.05)
    assert len(record["epochs"]) == 1


@pytest.mark.parametrize("extra,message", [
    (["--method", "magic"], "unknown method 'magic'"),
    (["--set", "margn=0.3"], "unknown setting 'margn'"),
    (["--dim", "64"], "target dim 64 must be between 1 and the input dim 16"),
    (["--set", "nonsense"], "--set expects NAME=VALUE"),
    (["--config", "/nonexistent.json"], "config file not found"),
])
def test_bad_requests_exit_2_with_one_line(toy, capsys, extra, message):
    assert main(["train", *toy, "--epochs", "1", "--no-progress", *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("dive: error:") and message in err[-1]


def test_evaluate_refuses_supervised_methods_without_a_fitted_one(toy, capsys):
    assert main(["evaluate", *toy, "--method", "dive"]) == 2
    assert "needs training" in capsys.readouterr().err


def test_embed_writes_a_vectors_folder_that_train_accepts(toy, tmp_path, capsys):
    assert main(["embed", *toy, "--out", str(tmp_path / "copy")]) == 0
    assert sorted(p.name for p in (tmp_path / "copy").iterdir()) == ["corpus.npy", "corpus_ids.txt", "queries.npy",
                                                                    "query_ids.txt"]


def test_subprocess_errors_have_no_traceback_unless_debug(tmp_path):
    env = {**os.environ, "DIVE_DATA_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "dive.cli", "evaluate", "--dataset", "no-such-set"],
                          capture_output=True, text=True, env=env)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and "dataset 'no-such-set' not found" in done.stderr
    debug = subprocess.run([sys.executable, "-m", "dive.cli", "--debug", "evaluate", "--dataset", "no-such-set"],
                           capture_output=True, text=True, env=env)
    assert "Traceback" in debug.stderr


@pytest.mark.parametrize("command", [[], ["train"], ["evaluate"], ["embed"], ["methods"], ["reproduce"], ["tune"],
                                     ["compress"], ["export"], ["index"], ["search"]])
def test_help_explains_every_command(command, capsys):
    with pytest.raises(SystemExit) as done:
        main([*command, "--help"])
    assert done.value.code == 0
    assert "usage: dive" in capsys.readouterr().out


def test_methods_lists_each_method_with_its_paper(capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    for name in ("frozen", "truncate", "dive"):
        assert name in out
    assert "paper:" in out


def start_and_kill(command, ready, timeout=120):
    """Run ``command`` as a subprocess, SIGTERM it once ``ready()`` holds, return its exit code."""
    import signal
    import time

    process = subprocess.Popen([sys.executable, "-m", "dive.cli", *command], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    deadline = time.time() + timeout
    while time.time() < deadline and process.poll() is None and not ready():
        time.sleep(0.05)
    assert process.poll() is None, "the run ended before it could be interrupted"
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=60)
    return process.returncode


def leftovers(folder):
    """Temporary dot-files of unfinished atomic writes (the grid's lock file is meant to stay)."""
    from dive.experiments.grid import LOCK_FILE

    return [path for path in folder.rglob("*") if path.name.startswith(".") and path.name != LOCK_FILE]


def test_killed_train_resumes_to_the_same_weights(toy, tmp_path):
    from safetensors.numpy import load_file

    command = ["train", *toy, "--method", "dive", "--dim", "8", "--hidden", "256", "--epochs", "150",
               "--batch-size", "8", "--no-progress"]
    killed = tmp_path / "killed"
    checkpoints = killed / "checkpoints"
    code = start_and_kill([*command, "--out", str(killed)], lambda: len(list(checkpoints.rglob("epoch-*"))) > 0)
    assert code == 143
    assert not (killed / "result.json").exists() and not (killed / "method").exists()
    assert not [path for path in leftovers(killed) if not path.name.startswith(".epoch-")]
    done = subprocess.run([sys.executable, "-m", "dive.cli", *command, "--out", str(killed), "--resume"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "resumed after epoch" in done.stderr and not checkpoints.exists()
    assert main([*command, "--out", str(tmp_path / "whole")]) == 0
    resumed = load_file(killed / "method" / "weights.safetensors")
    whole = load_file(tmp_path / "whole" / "method" / "weights.safetensors")
    assert resumed.keys() == whole.keys()
    assert all(np.array_equal(resumed[name], whole[name]) for name in whole)
    assert main([*command, "--out", str(tmp_path / "fresh"), "--resume"]) == 2  # nothing to resume


def test_killed_reproduce_leaves_whole_cells_only_and_the_rerun_completes(toy, tmp_path):
    dataset, vectors = toy[1], toy[3]
    out = tmp_path / "grid"
    command = ["reproduce", "--datasets", dataset, "--vectors", f"{dataset}={vectors}", "--methods",
               "frozen,truncate,dive", "--dims", "8", "--protocols", "heldout,paper", "--epochs", "100",
               "--out", str(out), "--no-progress"]
    results = out / "results.jsonl"
    code = start_and_kill(command, lambda: results.exists() and results.read_text().count("\n") >= 2)
    assert code == 143
    finished = [json.loads(line) for line in results.read_text().splitlines()]  # every line whole
    assert [row["method"] for row in finished] == ["frozen", "truncate"]
    assert not (out / "report.md").exists() and not leftovers(out)
    done = subprocess.run([sys.executable, "-m", "dive.cli", *command], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    assert [row["method"] for row in rows[:2]] == ["frozen", "truncate"] and rows[:2] == finished  # not redone
    assert sorted((row["protocol"], row["method"]) for row in rows) == sorted(
        (protocol, method) for protocol in ("heldout", "paper") for method in ("frozen", "truncate", "dive"))
    assert (out / "report.md").exists()


def test_oversampling_flag_reaches_the_binary_codec(toy, capsys):
    record = run_json(capsys, ["evaluate", *toy, "--method", "frozen", "--codec", "binary", "--oversampling", "2.5",
                               "--codec-set", "threshold=zero", "--json"])
    assert record["codec"]["config"]["oversampling"] == 2.5 and record["codec"]["config"]["threshold"] == "zero"
    assert record["bytes_per_vector"] == 2
    assert main(["evaluate", *toy, "--method", "frozen", "--codec", "int8", "--oversampling", "2"]) == 2
    assert "--oversampling applies to --codec binary only" in capsys.readouterr().err
    assert main(["evaluate", *toy, "--method", "frozen", "--codec", "binary", "--rescore", "5",
                 "--oversampling", "2"]) == 2
    assert "not both" in capsys.readouterr().err
