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
from contextlib import contextmanager
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
    training settings that change only what is shown (``train.progress``)."""
    settings = {name: record[name] for name in SETTINGS_FIELDS if name in record}
    if isinstance(settings.get("config"), dict):
        settings["config"] = result_settings(settings["config"])
    return settings


def read_results(path: Path) -> list[dict[str, Any]]:
    """Records of ``results.jsonl``; a torn (unparseable) last line is ignored, others are errors."""
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").split("\n")
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if any(rest.strip() for rest in lines[number:]):
                raise DiveError(f"{path}:{number}: corrupt results line (not the last one)") from None
            log.warning("%s: dropping a torn last line left by an interrupted run", path)
    return records


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
    """Hold an exclusive lock on ``out`` (released when the process exits, even if killed)."""
    try:
        import fcntl
    except ImportError:  # not POSIX (Windows): run unlocked
        yield
        return
    with open(out / LOCK_FILE, "a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise DiveError(f"{out}: another dive reproduce ({holder}) is running into this folder; "
                            "wait for it or use another --out folder") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}\n")
        handle.flush()
        yield


def merge_results(out: Path, sources: list[Path]) -> int:
    """Add the cells of other ``results.jsonl`` files (e.g. one grid split by method over several
    processes or machines) to ``out``'s; where a cell is in both, ``out``'s record is kept.

    Returns how many records were added. The file is rewritten atomically, so a bad source (missing,
    corrupt, or another model's cells of a dataset ``out`` holds) leaves ``out`` untouched.
    """
    out.mkdir(parents=True, exist_ok=True)
    with folder_lock(out):
        path = out / RESULTS_FILE
        records = read_results(path)
        done = {cell_key(record) for record in records}
        added = 0
        for source in sources:
            if not source.is_file():
                raise DiveError(f"{source}: no such results file")
            for record in read_results(source):
                if cell_key(record) in done:
                    continue
                _check_same_model(records, record, source, path)
                records.append(record)
                done.add(cell_key(record))
                added += 1
        write_results(path, results_text(records))
    return added


def _check_same_model(records: list[dict[str, Any]], record: dict[str, Any], source: Path, path: Path) -> None:
    model, dataset = str(record.get("model")), record.get("dataset")
    others = _other_models(records, dataset, model)
    if others:
        raise DiveError(f"{source}: its {dataset} cells were embedded with {model}, but {path}'s with "
                        f"{others[0]}; a folder holds one model's cells per dataset")
