"""Bad input through the command line: every case exits 2 with one line naming the file, line
or id and what was expected, prints no traceback, and leaves no output behind.

Each case builds its broken input from a valid toy dataset, vectors folder and saved pipeline.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dive.cli import main
from dive.data import TrainSet
from dive.encode import save_embeddings
from dive.methods import create_method
from dive.pipeline import Pipeline
from helpers import random_unit, synthetic_embeddings, write_beir


class Planted:
    """A pickle payload that would create a file if it were ever unpickled."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.fixture()
def world(tmp_path):
    """Valid inputs to break: a BEIR folder, its vectors, a saved pipeline, a vectors file."""
    write_beir(tmp_path / "toy", n_docs=60, n_queries=40)
    save_embeddings(synthetic_embeddings(60, 40, 16), tmp_path / "vectors")
    corpus = random_unit(60, 16)
    Pipeline(create_method("pca", dim=8).fit(TrainSet.unsupervised(corpus))).save(tmp_path / "pipeline")
    np.save(tmp_path / "in.npy", corpus)
    return tmp_path


def replace_line(path: Path, index: int, text: str) -> None:
    lines = path.read_text().splitlines()
    lines[index] = text
    path.write_text("\n".join(lines) + "\n")


def edit_vectors(name: str, change):
    def apply(root: Path) -> None:
        array = np.load(root / "vectors" / name)
        np.save(root / "vectors" / name, change(array))
    return apply


def edit_config(change):
    def apply(root: Path) -> None:
        path = root / "pipeline" / "method" / "config.json"
        record = json.loads(path.read_text())
        change(record)
        write_config(root, json.dumps(record))
    return apply


def write_config(root: Path, text: str) -> None:
    """Replace the method's config.json and record its checksum in pipeline.json (as a save would), so the
    load gets past the checksum check (issue 20, defect 7) and reaches the config's content."""
    path = root / "pipeline" / "method" / "config.json"
    path.write_text(text)
    manifest = root / "pipeline" / "pipeline.json"
    record = json.loads(manifest.read_text())
    record["checksums"]["method"] = hashlib.sha256(path.read_bytes()).hexdigest()
    manifest.write_text(json.dumps(record))


def with_value(row: int, column: int, value: float):
    def change(array):
        array = array.copy()
        array[row, column] = value
        return array
    return change


TRAIN = ["train", "--dataset", "{root}/toy", "--vectors", "{root}/vectors", "--method", "dive", "--dim", "4",
         "--epochs", "1", "--no-progress", "--out", "{root}/out"]
EVALUATE = ["evaluate", "--dataset", "{root}/toy", "--vectors", "{root}/vectors", "--load", "{root}/pipeline",
            "--out", "{root}/out"]
COMPRESS = ["compress", "--pipeline", "{root}/pipeline", "--input", "{root}/in.npy", "--output", "{root}/out.npy",
            "--no-progress"]

CASES = {
    # BEIR files
    "malformed JSONL line": (lambda r: replace_line(r / "toy" / "corpus.jsonl", 3, "{not json"), TRAIN,
                             "corpus.jsonl:4: not valid JSON"),
    "record that is not an object": (lambda r: replace_line(r / "toy" / "queries.jsonl", 0, "[1, 2]"), TRAIN,
                                     "queries.jsonl:1: expected a JSON object"),
    "missing _id field": (lambda r: replace_line(r / "toy" / "corpus.jsonl", 0, '{"text": "no id"}'), TRAIN,
                          "corpus.jsonl:1: missing field '_id'"),
    "duplicate document id": (lambda r: replace_line(r / "toy" / "corpus.jsonl", 1, '{"_id": "d0", "text": "x"}'),
                              TRAIN, "corpus.jsonl:2: duplicate id 'd0'"),
    "qrels naming an unknown query": (lambda r: replace_line(r / "toy" / "qrels" / "train.tsv", 1, "q999\td0\t1"),
                                      TRAIN, "train.tsv:2: query id 'q999' is not in the queries file"),
    "qrels naming an unknown document": (lambda r: replace_line(r / "toy" / "qrels" / "test.tsv", 1, "q20\td999\t1"),
                                         TRAIN, "test.tsv:2: document id 'd999' is not in the corpus"),
    "qrels row with two columns": (lambda r: replace_line(r / "toy" / "qrels" / "test.tsv", 1, "q20\td20"), TRAIN,
                                   "test.tsv:2: expected 3 tab-separated columns"),
    "qrels score that is not a number": (lambda r: replace_line(r / "toy" / "qrels" / "test.tsv", 1, "q20\td20\thigh"),
                                         TRAIN, "test.tsv:2: score 'high' is not a number"),
    "empty corpus": (lambda r: (r / "toy" / "corpus.jsonl").write_text(""), TRAIN, "corpus.jsonl: no records"),
    "empty qrels split": (lambda r: (r / "toy" / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n"),
                          TRAIN, "test.tsv: no relevance judgements"),
    "no qrels folder": (lambda r: [p.unlink() for p in (r / "toy" / "qrels").iterdir()], TRAIN,
                        "no qrels/<split>.tsv files"),
    # vector folders
    "NaN in corpus vectors": (edit_vectors("corpus.npy", with_value(5, 2, np.nan)), TRAIN,
                              "corpus.npy: row 5 contains NaN or inf"),
    "inf in query vectors": (edit_vectors("queries.npy", with_value(7, 0, np.inf)), TRAIN,
                             "queries.npy: row 7 contains NaN or inf"),
    "all-zero vector": (edit_vectors("corpus.npy", lambda a: np.where(np.arange(len(a))[:, None] == 9, 0, a)), TRAIN,
                        "corpus.npy: row 9 is an all-zero vector"),
    "integer vectors": (edit_vectors("corpus.npy", lambda a: (a * 100).astype(np.int32)), TRAIN,
                        "expected floating-point vectors, got dtype int32"),
    "query vectors of another dimension": (edit_vectors("queries.npy", lambda a: a[:, :8]), TRAIN,
                                           "dimension 8 does not match the expected 16"),
    "more ids than vectors": (lambda r: (r / "vectors" / "corpus_ids.txt").write_text(
        "".join(f"d{i}\n" for i in range(61))), TRAIN, "60 vectors but 61 ids"),
    "a document without a vector": (lambda r: (r / "vectors" / "corpus_ids.txt").write_text(
        "".join(f"d{i}\n" for i in range(59)) + "other\n"), TRAIN, "1 corpus documents have no vector (e.g. 'd59')"),
    "vectors file that is not .npy": (lambda r: (r / "vectors" / "queries.npy").write_text("hello"), TRAIN,
                                      "queries.npy: not a readable .npy array"),
    # saved pipelines
    "missing weights file": (lambda r: (r / "pipeline" / "method" / "weights.safetensors").unlink(), EVALUATE,
                             "weights.safetensors is missing"),
    "altered weights file": (lambda r: (r / "pipeline" / "method" / "weights.safetensors").write_bytes(b"x" * 64),
                             EVALUATE, "checksum does not match config.json"),
    "pickle planted as weights": (lambda r: (r / "pipeline" / "method" / "weights.safetensors").write_bytes(
        pickle.dumps(Planted(r / "PWNED"))), EVALUATE, "checksum does not match config.json"),
    "config from a newer dive": (edit_config(lambda record: record.update(dive_version="99.0")), EVALUATE,
                                 "written by dive 99.0, newer than this dive"),
    "config that is not JSON": (lambda r: write_config(r, "{oops"), EVALUATE,
                                "config.json: not valid JSON"),
    "not a pipeline folder": (lambda r: (r / "pipeline" / "pipeline.json").write_text('{"format": "other"}'),
                              EVALUATE, "pipeline.json: not a dive-pipeline/1 file"),
    "method swapped after the pipeline was saved": (
        lambda r: create_method("pca", dim=8).fit(TrainSet.unsupervised(random_unit(60, 16, seed=1))).save(
            r / "pipeline" / "method"), EVALUATE, "method: does not match pipeline.json"),
    "pipeline whose save never finished": (lambda r: (r / "pipeline" / "pipeline.json").unlink(), EVALUATE,
                                           "incomplete pipeline (no pipeline.json"),
    # dive compress
    "vectors with NaN to compress": (lambda r: np.save(r / "in.npy", with_value(40, 1, np.nan)(random_unit(60, 16))),
                                     COMPRESS, "in.npy (chunk from row 0): row 40 contains NaN or inf"),
    "vectors of the wrong dimension to compress": (lambda r: np.save(r / "in.npy", random_unit(60, 12)), COMPRESS,
                                                   "dimension 12 does not match the expected 16"),
    "truncated .npy to compress": (lambda r: (r / "in.npy").write_bytes((r / "in.npy").read_bytes()[:1000]),
                                   COMPRESS, "file is truncated"),
    "3-D array to compress": (lambda r: np.save(r / "in.npy", np.ones((2, 3, 4), np.float32)), COMPRESS,
                              "expected a C-ordered 2-D numeric array"),
    "ragged Parquet vectors": (lambda r: pq.write_table(pa.table({"embedding": [[0.5] * 16, [0.5] * 15]}),
                                                        r / "in.parquet"),
                               ["compress", "--pipeline", "{root}/pipeline", "--input", "{root}/in.parquet",
                                "--output", "{root}/out.parquet"], "row 1 of 'embedding' has 15 values, row 0 has 16"),
    # other commands
    "unknown output type": (lambda r: None, [*COMPRESS[:5], "--output", "{root}/out.csv"], "unknown file type"),
    "--resume without checkpoints": (lambda r: None, [*TRAIN, "--resume"], "--resume: no checkpoints in"),
    "search an index that does not exist": (lambda r: None, ["search", "--index", "{root}/none.faiss", "--query", "x"],
                                            "not written by `dive index`"),
    "export to ONNX from a missing pipeline": (lambda r: None, ["export", "--pipeline", "{root}/nothing",
                                                                "--format", "onnx", "--out", "{root}/out.onnx"],
                                               "no config.json (not a saved dive folder)"),
    "malformed --vectors for reproduce": (lambda r: None, ["reproduce", "--datasets", "toy", "--vectors", "toy",
                                                           "--out", "{root}/out"], "--vectors expects DATASET=FOLDER"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_gives_one_clear_line_and_leaves_nothing(world, capsys, case):
    breakage, argv, message = CASES[case]
    breakage(world)
    before = {path for path in world.rglob("*")}
    assert main([part.format(root=world) for part in argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("dive: error:") and message in err[-1], err
    assert not any("Traceback" in line for line in err)
    created = {path for path in world.rglob("*")} - before
    assert not created, f"left behind: {sorted(map(str, created))}"  # no partial outputs, no temp files
    assert not (world / "PWNED").exists()  # the planted pickle never ran


def test_the_case_table_is_large():
    print(f"\n{len(CASES)} bad-input cases through the CLI")
    assert len(CASES) >= 30
