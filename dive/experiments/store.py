"""The results store: ``DIR/results.jsonl``, one JSON record per finished cell.

Records are appended (flushed and fsynced) one line at a time, so a finished cell survives a
crash; a torn last line left by a killed run is dropped on read and repaired before the next
append. A folder holds one embedding model's cells per dataset (cells are keyed without the
model), and one process at a time may write into it (:func:`folder_lock`).
"""

from __future__ import annotations

import json
import logging
import os
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Iterator

from dive.errors import DiveError
from dive.train import result_settings
from dive.utils import atomic_path

log = logging.getLogger(__name__)

RESULTS_FILE = "results.jsonl"
LOCK_FILE = ".lock"
CELL_FIELDS = ("dataset", "protocol", "method", "dim", "seed", "codec_label")


SETTINGS_FIELDS = ("config", "mining", "split_config", "model")
"""Record fields that, beside the cell key, decide a cell's numbers: the method's full config (epochs,
loss settings, selection rule), negative mining, the split, and the embedding model."""


def cell_key(record: dict[str, Any]) -> tuple:
    return tuple(record.get(name, "none") for name in CELL_FIELDS)


def cell_settings(record: dict[str, Any]) -> dict[str, Any]:
    """The :data:`SETTINGS_FIELDS` of a record that has them (older records may lack some), without the
    training settings that change only what is shown (``train.progress``), and without the split
    settings for the ``paper`` protocol, which uses no split."""
    settings = {name: record[name] for name in SETTINGS_FIELDS if name in record}
    if record.get("protocol") == "paper":  # it trains and tests on every qrels split: no split settings apply
        settings.pop("split_config", None)
    if isinstance(settings.get("config"), dict):
        settings["config"] = result_settings(settings["config"])
    return settings


def read_results(path: Path) -> list[dict[str, Any]]:
    """Records of ``results.jsonl``; a torn (unparseable) last line is ignored, others are errors."""
    if not path.exists():
        return []
    lines = _read_text(path).split("\n")
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if any(rest.strip() for rest in lines[number:]):
                raise DiveError(f"{path}:{number}: corrupt results line (not the last one)") from None
            log.warning("%s: dropping a torn last line left by an interrupted run", path)
            continue
        if not isinstance(record, dict):
            raise DiveError(f"{path}:{number}: expected a JSON object (one cell's record), "
                            f"got {type(record).__name__}")
        records.append(record)
    return records


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise DiveError(f"{path}: not a file (expected a results file, one JSON record per line)")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise DiveError(f"{path}: not UTF-8 text (byte {error.start})") from None
    except OSError as error:
        raise DiveError(f"{path}: cannot read ({error.strerror or error})") from None


def repair(path: Path, records: list[dict[str, Any]]) -> None:
    """Rewrite ``results.jsonl`` without a torn tail, atomically, so appends start on a clean line."""
    text = results_text(records)
    if path.exists() and path.read_text(encoding="utf-8") != text:
        write_results(path, text)


def results_text(records: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(record) + "\n" for record in records)


def write_results(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def append_result(path: Path, record: dict[str, Any]) -> None:
    """Append one record as one line and fsync, so a finished cell survives a crash."""
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def check_one_model(records: list[dict[str, Any]], dataset: str, model: str, path: Path) -> None:
    """Cells are keyed without the model, so a folder must hold one model's cells per dataset."""
    name = Path(dataset).name
    others = _other_models(records, name, model)
    if others:
        raise DiveError(f"{path}: its {name} cells were embedded with {others[0]}, not {model}; "
                        "use another --out folder")


def _other_models(records: list[dict[str, Any]], dataset: str, model: str) -> list[str]:
    return sorted({str(r.get("model")) for r in records if r.get("dataset") == dataset} - {model})


@contextmanager
def folder_lock(out: Path) -> Iterator[None]:
    """Create ``out`` if needed and hold an exclusive lock on it (released when the process exits,
    even if killed).

    If the block fails, the lock file goes if this call made it, and ``out`` too if this call
    created it and it is empty: a refusal (a rejected input, a bad merge source) leaves no trace.
    After a success the lock file stays, harmless, for the next run.
    """
    if out.exists() and not out.is_dir():
        raise DiveError(f"{out}: not a folder (--out must be a folder for results)")
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DiveError(f"cannot write {out}: {error.strerror or error}") from None
    lock = out / LOCK_FILE
    made_lock = not lock.exists()
    try:
        with _held_lock(out):
            try:
                yield
            except BaseException:
                if made_lock:
                    with suppress(OSError):  # while held: _held_lock's check makes that safe
                        lock.unlink(missing_ok=True)
                raise
    finally:
        if created:
            _remove_if_empty(out)


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:  # not empty (or already gone): keep it
        pass


@contextmanager
def _held_lock(out: Path) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # not POSIX (Windows): run unlocked
        yield
        return
    path = out / LOCK_FILE
    while True:
        handle = open(path, "a+", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise DiveError(f"{out}: another dive reproduce ({holder}) is running into this folder; "
                            "wait for it or use another --out folder") from None
        if _is_current(handle, path):
            break
        handle.close()  # its holder removed it before we got it: lock the file now at the path
    with handle:
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}\n")
        handle.flush()
        yield


def _is_current(handle: Any, path: Path) -> bool:
    """Whether the locked ``handle`` is still the file at ``path`` (a holder may remove the lock file
    it made, on a refusal; a lock taken on the removed file would guard nothing)."""
    try:
        return os.path.samestat(os.fstat(handle.fileno()), os.stat(path))
    except FileNotFoundError:
        return False


def merge_results(out: Path, sources: list[Path]) -> int:
    """Add the cells of other ``results.jsonl`` files (e.g. one grid split by method over several
    processes or machines) to ``out``'s; where a cell is in both, ``out``'s record is kept.

    Returns how many records were added. The sources are read before ``out`` is touched, and the
    file is rewritten atomically, so a bad source (missing, corrupt, or another model's cells of a
    dataset ``out`` holds) leaves ``out`` untouched.
    """
    incoming = [(source, _read_source(source)) for source in sources]
    with folder_lock(out):
        path = out / RESULTS_FILE
        records = read_results(path)
        done = {cell_key(record) for record in records}
        added = 0
        for source, source_records in incoming:
            for record in source_records:
                if cell_key(record) in done:
                    continue
                _check_same_model(records, record, source, path)
                records.append(record)
                done.add(cell_key(record))
                added += 1
        write_results(path, results_text(records))
    return added


def _read_source(source: Path) -> list[dict[str, Any]]:
    if not source.exists():
        raise DiveError(f"{source}: no such results file")
    return read_results(source)


def _check_same_model(records: list[dict[str, Any]], record: dict[str, Any], source: Path, path: Path) -> None:
    model, dataset = str(record.get("model")), record.get("dataset")
    others = _other_models(records, dataset, model)
    if others:
        raise DiveError(f"{source}: its {dataset} cells were embedded with {model}, but {path}'s with "
                        f"{others[0]}; a folder holds one model's cells per dataset")
