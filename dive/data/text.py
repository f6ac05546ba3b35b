"""Read users' text files (JSONL, TSV, id lists) line by line: strict UTF-8, a leading BOM tolerated.

Every problem is one :class:`~dive.errors.DiveError` naming the file (and the line where it
applies): a folder where a file should be, an unreadable or truncated file, bytes that are not
UTF-8 (a UTF-16 or Latin-1 export). Lines are split on ``\\n`` and decoded one at a time, so a
bad byte is reported on its own line.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import BinaryIO, Iterator

from dive.errors import DiveError

BOM = "\ufeff"


def _open_binary(path: Path) -> BinaryIO:
    if path.is_dir():
        raise DiveError(f"{path}: not a file (a folder)")
    try:
        return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")  # type: ignore[return-value]
    except OSError as error:
        raise DiveError(f"{path}: cannot read ({error.strerror or error})") from None


def decode_line(path: Path, line_number: int, raw: bytes) -> str:
    """``raw`` as strict UTF-8 (a BOM dropped on line 1), or a DiveError naming ``path:line_number``."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise DiveError(f"{path}:{line_number}: not valid UTF-8 (byte 0x{raw[error.start]:02x} at column "
                        f"{error.start + 1}); save the file as UTF-8") from None
    return text[1:] if line_number == 1 and text.startswith(BOM) else text


def text_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """``(line number from 1, line with its newline)`` of a UTF-8 text file (``.gz`` decompressed)."""
    path = Path(path)
    with _open_binary(path) as handle:
        try:
            for line_number, raw in enumerate(handle, start=1):
                yield line_number, decode_line(path, line_number, raw)
        except (OSError, EOFError) as error:  # a truncated or corrupt .gz, a read error
            raise DiveError(f"{path}: cannot read ({error})") from None


def json_object(path: Path, line_number: int, line: str, expected: str = "a JSON object") -> dict:
    """One JSONL line as a dict, or a DiveError naming ``path:line_number`` (``expected`` says what
    the line should hold)."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise DiveError(f"{path}:{line_number}: not valid JSON ({error.msg})") from None
    if not isinstance(record, dict):
        raise DiveError(f"{path}:{line_number}: expected {expected}")
    return record
