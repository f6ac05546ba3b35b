"""Harness for the reliability tests (issue 20): run the CLI, look at what it printed and left.

A command runs in-process (``main(argv)``) unless it can kill or hang the test process:
``subprocess=True`` runs it as ``python -m dive.cli`` (a C abort ends only the child), and
every in-process run has a watchdog that interrupts it like Ctrl-C after ``watchdog``
seconds (a hang becomes a failed case, not a stuck suite). An exception escaping ``main`` is
recorded as the traceback Python would print, exit code 1.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import resource
import signal
import subprocess
import sys
import threading
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

from dive.cli import main

REPO = Path(__file__).resolve().parents[1]
ERROR_PREFIX = "dive: error:"


@dataclass
class Result:
    """What one command did: exit code (None if it hung), its output, and how it ended."""

    rc: int | None
    stdout: str
    stderr: str
    note: str = ""

    @property
    def lines(self) -> list[str]:
        return self.stderr.strip().splitlines()

    def describe(self) -> str:
        """One line first (exit code, how it ended, the last stderr line), then the tail of stderr."""
        last = self.lines[-1].strip()[:300] if self.lines else "(nothing on stderr)"
        tail = "\n    ".join(self.lines[-8:])
        return f"exit {self.rc}{' (' + self.note + ')' if self.note else ''}; last line {last!r}\n    {tail}"


def fill(argv: Sequence[str], root: Path) -> list[str]:
    return [part.format(root=root) for part in argv]


@contextlib.contextmanager
def sigint_when(condition: Callable[[], bool], poll: float = 0.01) -> Iterator[dict]:
    """Send this process SIGINT (as Ctrl-C does) once ``condition()`` holds, while the block runs.

    The KeyboardInterrupt is raised only inside the block; a signal arriving after it is ignored,
    so it can never stop the test session.
    """
    state = {"armed": True, "fired": False}
    stop = threading.Event()

    def handler(signum, frame):
        if state["armed"]:
            raise KeyboardInterrupt

    def watch():
        while not stop.is_set():
            if condition():
                state["fired"] = True
                os.kill(os.getpid(), signal.SIGINT)
                return
            stop.wait(poll)

    previous = signal.signal(signal.SIGINT, handler)
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield state
    except KeyboardInterrupt:  # landed outside the command (it had already returned): not Ctrl-C for pytest
        raise AssertionError("SIGINT arrived after the command had returned") from None
    finally:
        state["armed"] = False
        stop.set()
        watcher.join()
        for _ in range(1000):  # let a pending signal reach the (now disarmed) handler
            pass
        signal.signal(signal.SIGINT, previous)


def interrupt_after(seconds: float):
    """A watchdog: Ctrl-C this process after ``seconds`` (see :func:`sigint_when`)."""
    import time

    deadline = time.monotonic() + seconds
    return sigint_when(lambda: time.monotonic() > deadline, poll=0.05)


@contextlib.contextmanager
def soft_limit(kind: int, value: int) -> Iterator[None]:
    """Lower a soft resource limit for the block (the hard limit is untouched, so it can be restored)."""
    soft, hard = resource.getrlimit(kind)
    resource.setrlimit(kind, (value if hard == resource.RLIM_INFINITY else min(value, hard), hard))
    try:
        yield
    finally:
        resource.setrlimit(kind, (soft, hard))


def address_space_now() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    return 0


def memory_guard(extra_bytes: int = 4 << 30):
    """RLIMIT_AS a few GiB above the current size: a tampered config that makes torch allocate
    fails at once instead of swapping the shared machine."""
    return soft_limit(resource.RLIMIT_AS, address_space_now() + extra_bytes)


def run_in_process(argv: list[str], capsys, cwd: Path | None = None, watchdog: float = 120,
                   fsize: int | None = None, memory_limit: bool = False) -> Result:
    capsys.readouterr()  # drop what the setup printed
    escaped = ""
    with contextlib.ExitStack() as stack:
        if cwd is not None:
            stack.enter_context(contextlib.chdir(cwd))
        guard = stack.enter_context(interrupt_after(watchdog))
        if fsize is not None:
            stack.enter_context(soft_limit(resource.RLIMIT_FSIZE, fsize))
        if memory_limit:
            stack.enter_context(memory_guard())
        try:
            rc = main(argv)
        except SystemExit as done:
            rc = done.code if isinstance(done.code, int) else 1
        except BaseException:  # what an uncaught exception would print, and its exit code
            rc, escaped = 1, traceback.format_exc()
    out, err = capsys.readouterr()
    note = f"hung: interrupted by the watchdog after {watchdog:g} s" if guard["fired"] else ""
    return Result(rc, out, err + escaped, note)


def subprocess_env() -> dict[str, str]:
    paths = [str(REPO), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, paths)), "OMP_NUM_THREADS": "1"}


def start_cli(argv: list[str], cwd: Path | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "dive.cli", *argv], cwd=cwd, env=subprocess_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run_subprocess(argv: list[str], cwd: Path | None = None, timeout: float = 180) -> Result:
    process = start_cli(argv, cwd)
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        return Result(None, out, err, f"hung: killed after {timeout:g} s")
    note = f"killed by {signal.Signals(-process.returncode).name}" if process.returncode < 0 else ""
    return Result(process.returncode, out, err, note)


def snapshot(root: Path) -> dict[str, str]:
    """Every path under ``root`` -> its kind and content hash (symlinks are recorded, not followed)."""
    state = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder, name)
            relative = str(path.relative_to(root))
            if path.is_symlink():
                state[relative] = f"link -> {os.readlink(path)}"
            elif path.is_dir():
                state[relative] = "folder"
            else:
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                state[relative] = f"file {path.stat().st_mode & 0o777:o} {digest}"
    return state


def changes(before: dict[str, str], after: dict[str, str], allowed: Callable[[str], bool] = lambda path: False
            ) -> list[str]:
    """Paths created, deleted or changed, except those ``allowed``."""
    found = [f"created {p}" for p in sorted(set(after) - set(before))]
    found += [f"deleted {p}" for p in sorted(set(before) - set(after))]
    found += [f"changed {p}" for p in sorted(set(before) & set(after)) if before[p] != after[p]]
    return [change for change in found if not allowed(change.split(" ", 1)[1])]


def assert_one_clear_line(result: Result, message: Sequence[str]) -> None:
    """Exit 2, no traceback, exactly one ``dive: error:`` line, last on stderr, holding every
    substring of ``message`` (case-insensitive)."""
    lines = result.lines
    assert not any("Traceback" in line for line in lines), f"traceback: {result.describe()}"
    assert result.rc == 2, result.describe()
    errors = [line for line in lines if line.startswith(ERROR_PREFIX)]
    assert len(errors) == 1 and lines[-1] == errors[0], f"not one last error line: {result.describe()}"
    missing = [part for part in message if part.lower() not in errors[0].lower()]
    assert not missing, f"expected {missing} in {errors[0]!r}"


def assert_success(result: Result) -> None:
    assert not any("Traceback" in line for line in result.lines), f"traceback: {result.describe()}"
    assert result.rc == 0, result.describe()
