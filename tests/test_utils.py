"""dive.utils.atomic_path: a write either lands whole or leaves nothing, and a killed run's temp file goes."""

import errno
import os
import time

import pytest

from dive.errors import DiveError
from dive.utils import STALE_TEMP_SECONDS, atomic_path, temp_prefix


def hidden_files(folder):
    return sorted(path.name for path in folder.iterdir() if path.name.startswith("."))


def temp_of(folder, owner):
    path = folder / f".out.npy.{owner}.abcd1234.tmp"
    path.write_text("a killed run's partial output")
    return path


def test_the_temp_file_names_its_process_and_is_renamed_on_success(tmp_path):
    with atomic_path(tmp_path / "out.npy") as tmp:
        assert tmp.name.startswith(temp_prefix(tmp_path / "out.npy")) and str(os.getpid()) in tmp.name
        tmp.write_text("done")
    assert (tmp_path / "out.npy").read_text() == "done" and not hidden_files(tmp_path)


def test_stale_temps_go_and_live_or_foreign_ones_stay(tmp_path):
    host = temp_prefix(tmp_path / "out.npy").split(".")[-2].rpartition("-")[0]
    dead = temp_of(tmp_path, f"{host}-{2**22 + 1}")  # above Linux's default pid_max: no such process
    live = temp_of(tmp_path, f"{host}-{os.getpid()}")
    other_host = temp_of(tmp_path, "someotherhost-1")
    old = temp_of(tmp_path, "someotherhost-2")
    day_ago = time.time() - STALE_TEMP_SECONDS - 60
    os.utime(old, (day_ago, day_ago))
    not_dives = tmp_path / ".out.npy.notes.tmp"
    not_dives.write_text("the user's")
    with atomic_path(tmp_path / "out.npy") as tmp:
        tmp.write_text("done")
    assert hidden_files(tmp_path) == sorted(path.name for path in (live, other_host, not_dives))
    assert not dead.exists() and not old.exists()


@pytest.mark.parametrize("failure", [errno.ENOSPC, errno.EFBIG])
def test_a_full_disk_is_one_line_and_leaves_no_temp_or_new_folders(tmp_path, failure):
    target = tmp_path / "new" / "deeper" / "out.npy"
    with pytest.raises(DiveError, match=rf"cannot write {target}: {os.strerror(failure)}"):
        with atomic_path(target) as tmp:
            tmp.write_text("partial")
            raise OSError(failure, os.strerror(failure))
    assert list(tmp_path.iterdir()) == []


def test_a_folder_or_a_file_in_the_way_is_refused_before_writing(tmp_path):
    (tmp_path / "out.npy").mkdir()
    with pytest.raises(DiveError, match="out.npy: not a file"):
        with atomic_path(tmp_path / "out.npy"):
            pytest.fail("the block ran")
    (tmp_path / "afile").write_text("x")
    with pytest.raises(DiveError, match=r"cannot write .*afile/out.npy: .*afile is not a folder"):
        with atomic_path(tmp_path / "afile" / "out.npy"):
            pytest.fail("the block ran")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["afile", "out.npy"]


def test_other_errors_of_the_block_are_not_blamed_on_the_output(tmp_path):
    with pytest.raises(FileNotFoundError):
        with atomic_path(tmp_path / "out.npy"):
            open(tmp_path / "missing-input.npy", "rb")
    assert list(tmp_path.iterdir()) == []
