"""Saved folders: one ``config.json`` record plus one safetensors payload, checksum-verified.

Fitted methods and codecs are saved this way. Loading reads JSON and safetensors only, so a
folder from someone else can never execute code; the payload's SHA-256, recorded in the
JSON, catches a missing, truncated or altered file before it is parsed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, TypeVar

from dive import __version__
from dive.errors import DiveError
from dive.utils import atomic_path, sha256_file, write_json

CONFIG_FILE = "config.json"
CHECKSUM_KEY = "payload_sha256"

Payload = TypeVar("Payload")


def write_saved(directory: str | Path, fmt: str, payload_file: str, write_payload: Callable[[Path], None],
                fields: dict[str, Any]) -> Path:
    """Write the payload (via ``write_payload(tmp_path)``) then the JSON record, each atomically."""
    directory = Path(directory)
    with atomic_path(directory / payload_file) as tmp:
        write_payload(tmp)
    write_json(directory / CONFIG_FILE, {"format": fmt, "dive_version": __version__, **fields,
                                         CHECKSUM_KEY: sha256_file(directory / payload_file)})
    return directory


def _check_version(config_path: Path, saved_version: Any) -> None:
    """Refuse folders written by a newer dive: their format may carry meaning this one ignores."""
    from packaging.version import InvalidVersion, Version

    try:
        newer = Version(str(saved_version)) > Version(__version__)
    except InvalidVersion:
        raise DiveError(f"{config_path}: invalid dive_version {saved_version!r}") from None
    if newer:
        raise DiveError(f"{config_path}: written by dive {saved_version}, newer than this dive {__version__}; "
                        "upgrade dive-compress to load it")


def read_record(path: Path, fmt: str) -> dict[str, Any]:
    """A JSON record of format ``fmt`` written by this or an older dive."""
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise DiveError(f"{path}: not valid JSON ({error.msg})") from None
    if not isinstance(record, dict) or record.get("format") != fmt:
        raise DiveError(f"{path}: not a {fmt} file")
    _check_version(path, record.get("dive_version"))
    return record


def read_saved(directory: str | Path, fmt: str, payload_file: str,
               load_payload: Callable[[str], Payload]) -> tuple[dict[str, Any], Payload]:
    """Read and verify a saved folder: JSON record, format, checksum, then the safetensors payload."""
    directory = Path(directory)
    config_path, payload_path = directory / CONFIG_FILE, directory / payload_file
    if not config_path.exists():
        raise DiveError(f"{directory}: no {CONFIG_FILE} (not a saved dive folder)")
    record = read_record(config_path, fmt)
    if not payload_path.exists():
        raise DiveError(f"{directory}: {payload_file} is missing")
    if sha256_file(payload_path) != record.get(CHECKSUM_KEY):
        raise DiveError(f"{payload_path}: checksum does not match {CONFIG_FILE} (file altered or truncated)")
    try:
        payload = load_payload(str(payload_path))
    except Exception as error:  # safetensors raises its own error types
        raise DiveError(f"{payload_path}: not a readable safetensors file ({error})") from None
    return record, payload
