"""Issue 20, defects 2 and 9: a `dive train` interrupted after an epoch's checkpoint can be started
over with the same command (no --resume), or resumed with other progress settings.

The interrupted run is a real ``python -m dive.cli`` process stopped by SIGINT (Ctrl-C) or
SIGKILL once its checkpoint for epoch N exists; the rerun then runs in this process. Either
way the final weights must be those of one uninterrupted run of the same command.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from cli_harness import assert_success, fill, run_in_process, sigint_when, start_cli
from dive.cli import main
from dive.encode import save_embeddings
from helpers import synthetic_embeddings, write_beir

TRAIN = ["train", "--dataset", "{root}/toy", "--vectors", "{root}/vectors", "--method", "dive", "--dim", "8",
         "--hidden", "32", "--epochs", "3", "--batch-size", "4", "--seed", "5", "--no-progress"]
"""About a second per epoch on a loaded core: long enough to stop mid-run, short enough to rerun."""


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """torch on one thread, here and in the killed process, so every run computes the same weights."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OMP_NUM_THREADS", "1")
        yield


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("restart")
    write_beir(root / "toy", n_docs=60, n_queries=40)
    save_embeddings(synthetic_embeddings(60, 40, 16), root / "vectors")
    return root


@pytest.fixture(scope="module")
def uninterrupted(toy):
    """Weights of one uninterrupted run of TRAIN."""
    out = toy / "uninterrupted"
    assert main(fill([*TRAIN, "--out", str(out)], toy)) == 0
    return load_file(out / "method" / "weights.safetensors")


def epoch_saved(out: Path, epoch: int) -> bool:
    try:
        return any(out.rglob(f"epoch-{epoch:05d}"))
    except OSError:  # a folder renamed or pruned while we looked
        return False


def assert_same_weights(out: Path, expected: dict) -> None:
    weights = load_file(out / "method" / "weights.safetensors")
    assert weights.keys() == expected.keys()
    different = [name for name in expected if not np.array_equal(weights[name], expected[name])]
    assert not different, f"weights differ from an uninterrupted run: {different}"


def assert_nothing_left_of_the_checkpoints(out: Path) -> None:
    leftovers = sorted(str(path.relative_to(out)) for path in out.rglob("*")
                       if path.name.startswith((".", "epoch-")) or path.name == "checkpoints")
    assert not leftovers, f"left behind: {leftovers}"


def stop_after_epoch(command: list[str], out: Path, epoch: int, how: signal.Signals) -> int:
    """Start ``command`` as a process, send ``how`` once epoch ``epoch`` is checkpointed, return its exit code."""
    process = start_cli(command)
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None and not epoch_saved(out, epoch):
        time.sleep(0.01)
    assert process.poll() is None, f"the run ended before it could be stopped: {process.communicate()[1][-2000:]}"
    process.send_signal(how)
    process.communicate(timeout=120)
    return process.returncode


@pytest.mark.parametrize("how, epoch", [(signal.SIGINT, 1), (signal.SIGKILL, 2)], ids=["SIGINT-after-1",
                                                                                       "SIGKILL-after-2"])
def test_2_a_stopped_train_starts_over_with_the_same_command(toy, uninterrupted, tmp_path, capsys, how, epoch):
    out = tmp_path / "run"
    command = fill([*TRAIN, "--out", str(out)], toy)
    code = stop_after_epoch(command, out, epoch, how)
    assert code == (130 if how == signal.SIGINT else -signal.SIGKILL)
    assert epoch_saved(out, epoch) and not (out / "result.json").exists()
    result = run_in_process(command, capsys)  # the same command, without --resume: start over
    assert_success(result)
    assert (out / "result.json").exists()
    assert_same_weights(out, uninterrupted)
    assert_nothing_left_of_the_checkpoints(out)


def test_9_an_interrupted_run_resumes_with_no_progress(toy, uninterrupted, tmp_path, capsys):
    out = tmp_path / "run"
    with_progress = fill([*[part for part in TRAIN if part != "--no-progress"], "--out", str(out)], toy)
    with sigint_when(lambda: epoch_saved(out, 1)) as interrupt:
        code = main(with_progress)  # Ctrl-C after epoch 1, progress bars on
    assert interrupt["fired"] and code == 130
    capsys.readouterr()
    result = run_in_process(fill([*TRAIN, "--out", str(out), "--resume"], toy), capsys)
    assert_success(result)
    assert_same_weights(out, uninterrupted)
    assert_nothing_left_of_the_checkpoints(out)
