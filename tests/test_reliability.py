"""Issue 20 through the command line: every input a user can give ends in success or in one clear
line, never in a traceback, a C abort, a hang, a false success or a lost file.

Each refusal case breaks a copy of a valid toy world (a BEIR folder, its vectors, a saved DIVE
pipeline, a .npy to compress) and runs one command. It must exit 2 with exactly one
``dive: error:`` line, the last on stderr, naming the file or flag and what was expected; print
no traceback; and leave the world exactly as it was (nothing created, changed or deleted).
Where the correct behaviour is success, the test asserts that instead.

How the hostile environments are made (the tests run as root, who ignores permissions):
read-only = a path under ``/sys`` (sysfs refuses new files even to root); full disk =
``RLIMIT_FSIZE`` lowered for the command; a C abort (``--k 0``) = a subprocess; a hang (a
symlink to ``/dev/zero``) = an in-process watchdog that interrupts like Ctrl-C; a tampered
config that would allocate petabytes = ``RLIMIT_AS`` a few GiB above the current size.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import faiss
import numpy as np
import pytest

from cli_harness import (assert_one_clear_line, assert_success, changes, fill, run_in_process, run_subprocess,
                         snapshot, start_cli)
from dive.encode import save_embeddings
from dive.methods import create_method
from dive.pipeline import Pipeline
from helpers import random_unit, synthetic_embeddings, toy_train_set, write_beir

TRAIN = ["train", "--dataset", "{root}/toy", "--vectors", "{root}/vectors", "--method", "dive", "--dim", "4",
         "--hidden", "8", "--heads", "2", "--epochs", "1", "--batch-size", "16", "--no-progress", "--out", "{root}/out"]
EVALUATE = ["evaluate", "--dataset", "{root}/toy", "--vectors", "{root}/vectors", "--load", "{root}/pipeline"]
FROZEN = ["evaluate", "--dataset", "{root}/toy", "--vectors", "{root}/vectors", "--method", "frozen"]
COMPRESS = ["compress", "--pipeline", "{root}/pipeline", "--input", "{root}/in.npy", "--output", "{root}/out.npy",
            "--no-progress"]
SEARCH = ["search", "--index", "{root}/idx.faiss", "--query", "text of doc 3"]
REPRODUCE = ["reproduce", "--datasets", "{root}/toy", "--vectors", "{root}/toy={root}/vectors", "--methods", "frozen",
             "--dims", "4", "--protocols", "heldout", "--out", "{root}/grid", "--no-progress"]
FIT = ["fit", "--dataset", "{root}/toy", "--vectors", "{root}/vectors", "--no-progress", "--out", "{root}/fit"]
PETABYTES = 10**12
"""A ``hidden`` width whose first layer alone would take 64 TB: only reachable if a field is used unchecked."""


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    """torch on one thread: the 2 shared cores are oversubscribed otherwise (dive reads OMP_NUM_THREADS)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """A valid world to break: a BEIR folder, its vectors, a saved DIVE pipeline, a .npy to compress."""
    root = tmp_path_factory.mktemp("template")
    write_beir(root / "toy", n_docs=60, n_queries=40)
    save_embeddings(synthetic_embeddings(60, 40, 16), root / "vectors")
    method = create_method("dive", dim=4, hidden=8, heads=2, train={"epochs": 1, "batch_size": 16, "progress": False})
    Pipeline(method.fit(toy_train_set())).save(root / "pipeline")
    np.save(root / "in.npy", random_unit(60, 16, seed=3))
    return root


@pytest.fixture()
def world(template, tmp_path):
    shutil.copytree(template, tmp_path, dirs_exist_ok=True)
    return tmp_path


# --- ways to break the world -------------------------------------------------------------------

def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_json(path: Path, record: Any) -> None:
    path.write_text(json.dumps(record, indent=2) + "\n")


def replace_line(path: Path, index: int, text: str) -> None:
    lines = path.read_text().splitlines()
    lines[index] = text
    path.write_text("\n".join(lines) + "\n")


def edit_json(path: Path, change: Callable[[dict], None]) -> None:
    record = json.loads(path.read_text())
    change(record)
    write_json(path, record)


def setting(name: str, value: Any) -> Callable[[dict], None]:
    """Set (or, with ``value=DELETE``, remove) a key of a record; ``config.hidden`` reaches into ``config``."""
    def change(record: dict) -> None:
        *parents, key = name.split(".")
        for parent in parents:
            record = record[parent]
        if value is DELETE:
            del record[key]
        else:
            record[key] = value
    return change


DELETE = object()


def edit_config_only(change: Callable[[dict], None]) -> Callable[[Path], None]:
    """Edit the method's config.json and nothing else: pipeline.json's checksum no longer matches."""
    return lambda root: edit_json(root / "pipeline" / "method" / "config.json", change)


def recommit(root: Path, change_config: Callable[[dict], None] | None = None,
             change_tensors: Callable[[dict], None] | None = None) -> None:
    """Edit the saved method and update every checksum consistently (weights -> config -> pipeline.json),
    as someone who knows the format would."""
    from safetensors import safe_open
    from safetensors.numpy import load_file, save_file

    method = root / "pipeline" / "method"
    config_path, weights = method / "config.json", method / "weights.safetensors"
    record = json.loads(config_path.read_text())
    if change_tensors is not None:
        with safe_open(str(weights), "np") as handle:
            metadata = handle.metadata()
        tensors = load_file(weights)
        change_tensors(tensors)
        save_file(tensors, weights, metadata=metadata)
        record["payload_sha256"] = sha256(weights)
    if change_config is not None:
        change_config(record)
    write_json(config_path, record)
    recommit_manifest(root)


def recommit_manifest(root: Path) -> None:
    config_sha256 = sha256(root / "pipeline" / "method" / "config.json")
    edit_json(root / "pipeline" / "pipeline.json", lambda manifest: manifest["checksums"].update(method=config_sha256))


def with_nan_weights(tensors: dict) -> None:
    name = next(name for name, array in tensors.items() if array.dtype.kind == "f" and array.ndim == 2)
    tensors[name] = np.full_like(tensors[name], np.nan)


def npy_with_shape(path: Path, shape: tuple[int, ...], n_values: int = 160) -> None:
    """A .npy file whose header claims ``shape`` (negative sizes included), followed by ``n_values`` floats."""
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': %r, }" % (shape,)
    header += " " * ((-(10 + len(header) + 1)) % 64) + "\n"
    path.write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode("latin1")
                     + np.ones(n_values, "<f4").tobytes())


def replace_by_folder(relative: str) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        (root / relative).unlink()
        (root / relative).mkdir()
    return apply


def cli(root: Path, *argv: str) -> None:
    """Run a setup command that must succeed."""
    from dive.cli import main

    assert main(fill(argv, root)) == 0, f"setup command failed: {argv}"


def build_index(root: Path) -> None:
    cli(root, "index", "--pipeline", "{root}/pipeline", "--dataset", "{root}/toy", "--vectors", "{root}/vectors",
        "--out", "{root}/idx.faiss")


def index_replaced(write: Callable[[Path], None]) -> Callable[[Path], None]:
    """An index whose faiss file was replaced by ``write(path)``, and its manifest's checksum updated."""
    def apply(root: Path) -> None:
        build_index(root)
        write(root / "idx.faiss")
        edit_json(root / "idx.faiss.json", setting("sha256", sha256(root / "idx.faiss")))
    return apply


def other_dimension_index(path: Path) -> None:
    index = faiss.IndexFlatIP(5)  # the pipeline outputs 4 dims; same number of vectors
    index.add(random_unit(60, 5))
    faiss.write_index(index, str(path))


def stale_index(root: Path) -> None:
    """`dive index` on a pipeline, then a retrain into the same folder (real text model dims, 384)."""
    save_embeddings(synthetic_embeddings(60, 40, 384), root / "vectors384")
    retrain = ["train", "--dataset", "{root}/toy", "--vectors", "{root}/vectors384", "--method", "dive", "--dim", "8",
               "--hidden", "16", "--heads", "2", "--epochs", "1", "--batch-size", "16", "--no-progress",
               "--no-checkpoint", "--out", "{root}/p384"]
    cli(root, *retrain, "--seed", "0")
    cli(root, "index", "--pipeline", "{root}/p384", "--dataset", "{root}/toy", "--vectors", "{root}/vectors384",
        "--out", "{root}/idx.faiss")
    cli(root, *retrain, "--seed", "1")


def make_test_only(root: Path) -> None:
    """Make the toy dataset test-only, so --folds is used (K-fold cross-validation)."""
    (root / "toy" / "qrels" / "train.tsv").unlink()


def write_file(relative: str, text: str, encoding: str = "utf-8") -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(text, encoding=encoding)
    return apply


def in_utf16(relative: str) -> Callable[[Path], None]:
    return lambda root: (root / relative).write_text((root / relative).read_text(), encoding="utf-16")


def big_input(root: Path) -> None:
    np.save(root / "in.npy", np.tile(random_unit(1000, 16), (200, 1)))  # 200k rows: 3.2 MB compressed


def nothing(root: Path) -> None:
    pass


def steps(*breakages: Callable[[Path], None]) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        for breakage in breakages:
            breakage(root)
    return apply


# --- the case table ----------------------------------------------------------------------------

@dataclass
class Case:
    """Break the world with ``breakage``, run ``argv``, expect exit 2 and one line holding ``message``."""

    breakage: Callable[[Path], None]
    argv: list[str]
    message: tuple[str, ...]
    options: dict[str, Any] = field(default_factory=dict)
    """``subprocess=True`` (may abort), ``watchdog=S`` (may hang), ``fsize=BYTES``, ``memory_limit=True``."""


CASES: dict[str, Case] = {
    # control: an input the current code already refuses well (proves the harness itself passes)
    "control: malformed JSONL line": Case(lambda r: replace_line(r / "toy" / "corpus.jsonl", 3, "{not json"), TRAIN,
                                          ("corpus.jsonl:4: not valid JSON",)),
    # 3: a stale index
    "3 index of a pipeline retrained since": Case(stale_index, ["search", "--index", "{root}/idx.faiss",
                                                                "--query", "text of doc 3"], ("p384", "changed")),
    # 4: non-finite training
    "4 --lr inf": Case(nothing, [*TRAIN, "--lr", "inf"], ("--lr", "finite")),
    "4 --margin nan": Case(nothing, [*TRAIN, "--margin", "nan"], ("--margin", "finite")),
    "4 loss that becomes NaN (--lambda 1e300)": Case(nothing, [*TRAIN, "--lambda", "1e300"], ("loss", "finite")),
    "4 compress with NaN weights": Case(lambda r: recommit(r, change_tensors=with_nan_weights), COMPRESS,
                                        ("weights", "NaN")),
    "4 evaluate NaN weights": Case(lambda r: recommit(r, change_tensors=with_nan_weights), EVALUATE,
                                   ("weights", "NaN")),
    # 6: .npy headers with negative sizes
    "6 .npy to compress with a negative row count": Case(lambda r: npy_with_shape(r / "in.npy", (-5, 16)), COMPRESS,
                                                         ("in.npy", "negative")),
    "6 .npy to compress with a negative dim": Case(lambda r: npy_with_shape(r / "in.npy", (10, -16)), COMPRESS,
                                                   ("in.npy", "negative")),
    "6 control: corpus vectors with a negative row count": Case(
        lambda r: npy_with_shape(r / "vectors" / "corpus.npy", (-60, 16)), TRAIN,
        ("corpus.npy", "not a readable .npy")),
    "6 control: corpus vectors with a negative dim": Case(
        lambda r: npy_with_shape(r / "vectors" / "corpus.npy", (60, -16)), TRAIN,
        ("corpus.npy", "not a readable .npy")),
    # 7: checksums before parsing, and a missing checksum is a refusal
    "7 edited config, checksum not updated (hidden 10^12)": Case(
        edit_config_only(setting("config.hidden", PETABYTES)), COMPRESS, ("method", "does not match pipeline.json"),
        {"memory_limit": True}),
    "7 edited config, checksum not updated (input_dim text)": Case(
        edit_config_only(setting("input_dim", "sixteen")), COMPRESS, ("method", "does not match pipeline.json")),
    "7 checksums key deleted from pipeline.json": Case(
        lambda r: edit_json(r / "pipeline" / "pipeline.json", setting("checksums", DELETE)), COMPRESS,
        ("pipeline.json", "checksum")),
    "7 checksums key deleted and config edited (hidden 10^12)": Case(
        steps(edit_config_only(setting("config.hidden", PETABYTES)),
              lambda r: edit_json(r / "pipeline" / "pipeline.json", setting("checksums", DELETE))), COMPRESS,
        ("pipeline.json", "checksum"), {"memory_limit": True}),
    "7 empty checksums in pipeline.json": Case(
        lambda r: edit_json(r / "pipeline" / "pipeline.json", setting("checksums", {})), COMPRESS,
        ("pipeline.json", "checksum")),
    # 8: a C abort inside pytrec_eval
    "8 --k 0": Case(nothing, [*FROZEN, "--k", "0"], ("--k", "at least 1"), {"subprocess": True}),
    # 10: tracebacks instead of one line
    "10 qrels in UTF-16": Case(in_utf16("toy/qrels/test.tsv"), TRAIN, ("test.tsv", "UTF-8")),
    "10 qrels score inf": Case(lambda r: replace_line(r / "toy" / "qrels" / "test.tsv", 1, "q20\td20\tinf"), TRAIN,
                               ("test.tsv:2", "score 'inf'")),
    "10 control: qrels score nan": Case(lambda r: replace_line(r / "toy" / "qrels" / "test.tsv", 1, "q20\td20\tnan"),
                                        TRAIN, ("test.tsv:2", "score 'nan'")),
    "10 qrels/x.tsv that is a folder": Case(lambda r: (r / "toy" / "qrels" / "x.tsv").mkdir(), TRAIN,
                                            ("x.tsv", "not a file")),
    "10 id file in Latin-1": Case(write_file("vectors/corpus_ids.txt",
                                             "".join(f"d{i}\n" for i in range(59)) + "d59\u00e9\n", "latin-1"),
                                  TRAIN, ("corpus_ids.txt", "UTF-8")),
    "10 --lr nan": Case(nothing, [*TRAIN, "--lr", "nan"], ("--lr", "finite")),
    "10 --folds 0": Case(make_test_only, [*TRAIN, "--folds", "0"], ("--folds", "at least 2")),
    "10 --folds 1": Case(make_test_only, [*TRAIN, "--folds", "1"], ("--folds", "at least 2")),
    "10 --k -3": Case(nothing, [*FROZEN, "--k", "-3"], ("--k", "at least 1")),  # a ValueError, not an abort
    "10 --device tpu": Case(nothing, [*TRAIN, "--device", "tpu"], ("--device", "tpu")),
    "10 config file {\"train\": 5}": Case(write_file("cfg.json", '{"train": 5}'),
                                          [*TRAIN, "--config", "{root}/cfg.json"], ("cfg.json", "train")),
    "10 compress output that is a folder": Case(lambda r: (r / "out.npy").mkdir(), COMPRESS, ("out.npy", "not a file")),
    "10 compress output on a read-only file system": Case(
        nothing, [*COMPRESS[:5], "--output", "/sys/dive-reliability-out.npy", "--no-progress"],
        ("dive-reliability-out.npy", "cannot write")),
    "10 compress output below a file": Case(nothing, [*COMPRESS[:5], "--output", "{root}/in.npy/out.npy",
                                                      "--no-progress"], ("out.npy", "cannot write")),
    "10 compress output on a full disk": Case(big_input, COMPRESS, ("out.npy", "cannot write"), {"fsize": 1 << 20}),
    "10 tampered config: input_dim missing": Case(lambda r: recommit(r, setting("input_dim", DELETE)), COMPRESS,
                                                  ("config.json", "input_dim")),
    "10 tampered config: input_dim text": Case(lambda r: recommit(r, setting("input_dim", "sixteen")), COMPRESS,
                                               ("config.json", "input_dim")),
    "10 tampered config: input_dim negative": Case(lambda r: recommit(r, setting("input_dim", -16)), COMPRESS,
                                                   ("config.json", "input_dim")),
    "10 tampered config: hidden float": Case(lambda r: recommit(r, setting("config.hidden", 8.5)), COMPRESS,
                                             ("config.json", "hidden")),
    "10 config.json that is a folder": Case(replace_by_folder("pipeline/method/config.json"), COMPRESS,
                                            ("config.json", "not a file")),
    "10 weights that are a folder": Case(replace_by_folder("pipeline/method/weights.safetensors"), COMPRESS,
                                         ("weights.safetensors", "not a file")),
    "10 index manifest without 'pipeline'": Case(
        steps(build_index, lambda r: edit_json(r / "idx.faiss.json", setting("pipeline", DELETE))), SEARCH,
        ("idx.faiss.json", "pipeline")),
    "10 garbage faiss file, checksum updated": Case(index_replaced(lambda p: p.write_bytes(os.urandom(512))), SEARCH,
                                                    ("idx.faiss", "faiss")),
    "10 truncated faiss file, checksum updated": Case(
        index_replaced(lambda p: p.write_bytes(p.read_bytes()[:len(p.read_bytes()) // 2])), SEARCH,
        ("idx.faiss", "faiss")),
    "10 swapped faiss file (other dim), checksum updated": Case(index_replaced(other_dimension_index), SEARCH,
                                                                ("idx.faiss", "dimension")),
    "10 --out that is a file": Case(write_file("afile", "the user's notes\n"), [*TRAIN, "--out", "{root}/afile"],
                                    ("afile", "not a folder")),
    "10 results.jsonl that is a folder": Case(lambda r: (r / "grid" / "results.jsonl").mkdir(parents=True), REPRODUCE,
                                              ("results.jsonl", "not a file")),
    "10 merge line that is not an object": Case(
        write_file("other.jsonl", "[1, 2]\n"),
        ["reproduce", "--out", "{root}/grid", "--merge-from", "{root}/other.jsonl", "--report-only"],
        ("other.jsonl:1", "JSON object")),
    # 11: smaller
    "11 --validation-fraction 2": Case(nothing, [*TRAIN, "--validation-fraction", "2"],
                                       ("--validation-fraction", "between 0 and 1")),
    "11 --validation-fraction -0.5": Case(nothing, [*TRAIN, "--validation-fraction", "-0.5"],
                                          ("--validation-fraction", "between 0 and 1")),
    "11 weights symlinked to /dev/zero": Case(
        lambda r: ((r / "pipeline/method/weights.safetensors").unlink(),
                   (r / "pipeline/method/weights.safetensors").symlink_to("/dev/zero")),
        COMPRESS, ("weights.safetensors", "not a file"), {"watchdog": 6}),
    "11 rejected input leaves no --out folder holding .lock": Case(
        lambda r: replace_line(r / "toy" / "corpus.jsonl", 3, "{not json"), REPRODUCE, ("corpus.jsonl:4",)),
    "11 rejected merge leaves no --out folder holding .lock": Case(
        nothing, ["reproduce", "--out", "{root}/grid", "--merge-from", "{root}/missing.jsonl", "--report-only"],
        ("missing.jsonl",)),
    # 22: dive fit refuses before it writes anything
    "22 fit: a budget no candidate fits": Case(nothing, [*FIT, "--budget", "0.5"], ("no candidate fits", "0.5")),
    "22 fit: a codec sized only after encoding": Case(nothing, [*FIT, "--budget", "64", "--codecs", "lossless"],
                                                      ("lossless", "measured after encoding")),
    "22 fit: own qrels in UTF-16": Case(in_utf16("toy/qrels/test.tsv"),
                                        ["fit", "--vectors", "{root}/vectors", "--qrels", "{root}/toy/qrels/test.tsv",
                                         "--budget", "64", "--no-progress", "--out", "{root}/fit"],
                                        ("test.tsv", "UTF-8")),
    "22 fit: --qrels beside --dataset": Case(nothing, [*FIT, "--budget", "64", "--qrels", "{root}/toy/qrels/test.tsv"],
                                              ("--vectors DIR with --qrels FILE",)),
}


def run_case(world: Path, capsys, argv: list[str], options: dict[str, Any]):
    argv = fill(argv, world)
    if options.get("subprocess"):
        return run_subprocess(argv, cwd=world)
    return run_in_process(argv, capsys, watchdog=options.get("watchdog", 120), fsize=options.get("fsize"),
                          memory_limit=options.get("memory_limit", False))


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_gives_one_clear_line_and_changes_nothing(world, capsys, name):
    case = CASES[name]
    case.breakage(world)
    before = snapshot(world)
    result = run_case(world, capsys, case.argv, case.options)
    assert_one_clear_line(result, case.message)
    left = changes(before, snapshot(world))
    assert not left, f"the command changed the user's folder: {left}"


def test_the_case_table_covers_every_defect_of_issue_20():
    covered = {name.split(" ")[0] for name in CASES}
    assert {"3", "4", "6", "7", "8", "10", "11"} <= covered  # 1, 2, 5, 9 and the rest of 11 are tests below
    print(f"\n{len(CASES)} reliability cases through the CLI")


# --- defects whose correct behaviour is success ------------------------------------------------

@pytest.mark.parametrize("where", ["a folder of the user's", "the working directory (.)"])
def test_1_a_successful_train_keeps_the_users_files_in_the_checkpoint_dir(world, capsys, where):
    mine = world / "mine"
    mine.mkdir()
    (mine / "keep.txt").write_text("the user's own file\n")
    (mine / "thesis").mkdir()
    (mine / "thesis" / "draft.tex").write_text("\\section{x}\n")
    before = snapshot(world)
    checkpoint_dir, cwd = (str(mine), None) if where.startswith("a folder") else (".", mine)
    result = run_in_process(fill([*TRAIN, "--checkpoint-dir", checkpoint_dir], world), capsys, cwd=cwd)
    assert_success(result)
    assert (world / "out" / "result.json").exists()
    left = changes(before, snapshot(world), allowed=lambda path: path == "out" or path.startswith("out/"))
    assert not left, f"the checkpoint folder should hold exactly the user's files again: {left}"


def test_5_reproduce_does_not_reuse_cells_run_with_other_epochs(world, capsys):
    grid = world / "grid"
    command = fill(["reproduce", "--datasets", "{root}/toy", "--vectors", "{root}/toy={root}/vectors", "--methods",
                    "dive", "--dims", "4", "--protocols", "heldout", "--out", "{root}/grid", "--no-progress"], world)
    assert_success(run_in_process([*command, "--epochs", "1"], capsys))
    first = (grid / "results.jsonl").read_text()
    assert [json.loads(line)["config"]["train"]["epochs"] for line in first.splitlines()] == [1]
    result = run_in_process([*command, "--epochs", "2"], capsys)
    records = [json.loads(line) for line in (grid / "results.jsonl").read_text().splitlines()]
    if result.rc == 2:  # refusing the mismatch is allowed: one line, and the grid left as it was
        assert_one_clear_line(result, ("epochs",))
        assert (grid / "results.jsonl").read_text() == first
        return
    assert_success(result)
    assert any(record["config"]["train"]["epochs"] == 2 for record in records), \
        "the rerun with --epochs 2 reported the 1-epoch cell as done"


def test_10_a_truncated_embedding_cache_is_encoded_again(world, capsys, monkeypatch):
    cache = world / "cache"
    monkeypatch.setenv("DIVE_CACHE_DIR", str(cache))
    assert_success(run_in_process(fill(["embed", "--dataset", "{root}/toy", "--out", "{root}/first"], world), capsys))
    (cached,) = cache.rglob("corpus-*.npy")
    cached.write_bytes(cached.read_bytes()[:1000])  # a crash or a full disk mid-write
    result = run_in_process(fill(["embed", "--dataset", "{root}/toy", "--out", "{root}/second"], world), capsys)
    assert_success(result)
    assert np.load(cached).shape == (60, 384), "the cache file was not repaired"
    np.testing.assert_allclose(np.load(world / "second" / "corpus.npy"), np.load(world / "first" / "corpus.npy"),
                               atol=1e-5)


def test_11_a_sigkilled_compress_leaves_no_temp_file_after_the_next_run(world, capsys):
    big_input(world)
    out = world / "out"
    out.mkdir()
    command = fill([*COMPRESS[:5], "--output", "{root}/out/small.npy", "--chunk-rows", "500", "--no-progress"], world)
    process = start_cli(command)
    deadline = time.time() + 180
    while time.time() < deadline and process.poll() is None and not any(out.iterdir()):
        time.sleep(0.01)
    process.kill()
    process.communicate()
    stale = [path for path in out.iterdir() if path.name.startswith(".")]
    assert stale and not (out / "small.npy").exists(), "compress ended before it could be killed"
    old = time.time() - 86400
    for path in stale:
        os.utime(path, (old, old))  # stale by any rule: a day old, and its process is gone
    assert_success(run_in_process(command, capsys))
    assert sorted(path.name for path in out.iterdir()) == ["small.npy"], "a stale temp file was left behind"
    assert np.load(out / "small.npy").shape == (200_000, 4)


def test_11_saved_weights_have_the_same_permissions_as_their_configs(world, capsys):
    assert_success(run_in_process(fill([*TRAIN, "--no-checkpoint"], world), capsys))
    umask = os.umask(0)
    os.umask(umask)
    modes = {path.name: oct(path.stat().st_mode & 0o777) for path in (world / "out").rglob("*") if path.is_file()}
    assert set(modes.values()) == {oct(0o666 & ~umask)}, modes


def test_11_identical_weights_get_identical_files_and_checksums(world, capsys, tmp_path_factory):
    for name in ("a", "b"):
        assert_success(run_in_process(fill([*TRAIN, "--no-checkpoint", "--out", f"{{root}}/{name}"], world), capsys))
    weights = [(world / name / "method" / "weights.safetensors").read_bytes() for name in ("a", "b")]
    configs = [json.loads((world / name / "method" / "config.json").read_text()) for name in ("a", "b")]
    assert weights[0] == weights[1] and configs[0]["payload_sha256"] == configs[1]["payload_sha256"]
    loaded = Pipeline.load(world / "a")
    for copy in range(8):  # the header's key order must not vary from save to save either
        folder = loaded.save(tmp_path_factory.mktemp("resave") / "p")
        assert (folder / "method" / "weights.safetensors").read_bytes() == weights[0], f"re-save {copy} differs"


def test_11_a_bom_before_the_qrels_header_is_read_as_the_header(world, capsys):
    qrels = world / "toy" / "qrels" / "test.tsv"
    qrels.write_text("\ufeff" + qrels.read_text(), encoding="utf-8")
    assert_success(run_in_process(fill(FROZEN, world), capsys))
