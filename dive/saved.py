"""Saved folders: one ``config.json`` record plus one safetensors payload, checksum-verified.

Fitted methods, codecs and training checkpoints are saved this way; ``pipeline.json`` and index
manifests are records of the same kind. Every loader reads through this module, in one order:

1. read the bytes of a *regular* file (a folder, a device such as ``/dev/zero``, a FIFO, or a
   symlink to one is refused: reading it would fail, hang or never end);
2. check their SHA-256 against the checksum recorded one level up (``pipeline.json`` records
   each part's ``config.json``; ``config.json`` records its payload's), before anything in them
   is used: an edited record never reaches a constructor, and a missing checksum is a refusal;
3. only then parse them: JSON, then safetensors (which never executes code), then the typed
   fields (:func:`dive.config.from_dict`).

Payloads are written as canonical safetensors bytes (header keys sorted), so identical tensors
always give identical files and checksums, and every file is written with the same permissions.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import struct
from pathlib import Path
from typing import Any, Callable, Mapping, TypeVar

from dive import __version__
from dive.errors import DiveError, short_repr
from dive.utils import atomic_path, write_json

CONFIG_FILE = "config.json"
CHECKSUM_KEY = "payload_sha256"
HEADER_ALIGNMENT = 8
"""safetensors pads its JSON header to a multiple of 8 bytes (with spaces) so tensors stay aligned."""

Payload = TypeVar("Payload")


# ----- reading --------------------------------------------------------------------------------

def read_file(path: str | Path) -> bytes:
    """The bytes of the regular file ``path`` (a symlink to one is fine); anything else is a DiveError.

    The file is opened without blocking and checked on the open handle, so a FIFO or device put
    in a saved folder is refused instead of hanging the load or reading forever.
    """
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise DiveError(f"{path}: is missing") from None
    except OSError as error:
        raise DiveError(f"{path}: cannot read ({error.strerror or error})") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise DiveError(f"{path}: not a file (a folder, device or link to one); expected a file dive saved")
        with os.fdopen(fd, "rb", closefd=False) as handle:
            return handle.read()
    except OSError as error:
        raise DiveError(f"{path}: cannot read ({error.strerror or error})") from None
    finally:
        os.close(fd)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a regular file, read as :func:`read_file` reads it."""
    return sha256_bytes(read_file(path))


def read_verified(path: str | Path, expected_sha256: Any, mismatch: str) -> bytes:
    """:func:`read_file`, refused with ``mismatch`` (one line) unless its SHA-256 is ``expected_sha256``."""
    data = read_file(path)
    if not isinstance(expected_sha256, str) or sha256_bytes(data) != expected_sha256:
        raise DiveError(mismatch)
    return data


def parse_record(path: Path, data: bytes, fmt: str) -> dict[str, Any]:
    """``data`` (the bytes of ``path``) as a JSON record of format ``fmt`` from this or an older dive."""
    try:
        record = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise DiveError(f"{path}: not valid JSON (not UTF-8 text)") from None
    except json.JSONDecodeError as error:
        raise DiveError(f"{path}: not valid JSON ({error.msg})") from None
    except RecursionError:
        raise DiveError(f"{path}: not valid JSON (nested too deeply)") from None
    if not isinstance(record, dict) or record.get("format") != fmt:
        raise DiveError(f"{path}: not a {fmt} file")
    _check_version(path, record.get("dive_version"))
    return record


def read_record(path: str | Path, fmt: str, expected_sha256: str | None = None, mismatch: str = "") -> dict[str, Any]:
    """A JSON record of format ``fmt``; with ``expected_sha256``, its bytes are verified before parsing."""
    path = Path(path)
    data = read_file(path) if expected_sha256 is None else read_verified(path, expected_sha256, mismatch)
    return parse_record(path, data, fmt)


def _check_version(config_path: Path, saved_version: Any) -> None:
    """Refuse folders written by a newer dive: their format may carry meaning this one ignores."""
    from packaging.version import InvalidVersion, Version

    try:
        newer = Version(str(saved_version)) > Version(__version__)
    except InvalidVersion:
        raise DiveError(f"{config_path}: invalid dive_version {short_repr(saved_version)}") from None
    if newer:
        raise DiveError(f"{config_path}: written by dive {saved_version}, newer than this dive {__version__}; "
                        "upgrade dive-compress to load it")


def read_saved(directory: str | Path, fmt: str, payload_file: str, load_payload: Callable[[bytes], Payload],
               config_sha256: str | None = None, config_mismatch: str = "") -> tuple[dict[str, Any], Payload]:
    """Read and verify a saved folder: ``config.json`` (against ``config_sha256`` when the folder is part
    of something that records it), its format and version, the payload's checksum, then the payload.

    ``load_payload`` parses the verified payload bytes (``safetensors.torch.load`` or
    ``safetensors.numpy.load``).
    """
    directory = Path(directory)
    config_path, payload_path = directory / CONFIG_FILE, directory / payload_file
    if not os.path.lexists(config_path):
        raise DiveError(f"{directory}: no {CONFIG_FILE} (not a saved dive folder)")
    record = read_record(config_path, fmt, config_sha256, config_mismatch)
    if not os.path.lexists(payload_path):
        raise DiveError(f"{directory}: {payload_file} is missing")
    if not isinstance(record.get(CHECKSUM_KEY), str):
        raise DiveError(f"{config_path}: records no checksum of {payload_file} ('{CHECKSUM_KEY}')")
    data = read_verified(payload_path, record[CHECKSUM_KEY],
                         f"{payload_path}: checksum does not match {CONFIG_FILE} (file altered or truncated)")
    try:
        payload = load_payload(data)
    except Exception as error:  # safetensors raises its own error types
        raise DiveError(f"{payload_path}: not a readable safetensors file ({_first_line(error)})") from None
    return record, payload


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0][:200] if lines else type(error).__name__


# ----- writing --------------------------------------------------------------------------------

def canonical_safetensors(data: bytes) -> bytes:
    """``data`` (safetensors bytes) with its JSON header's keys sorted.

    safetensors writes its header from a hash map, so the key order (of ``__metadata__`` at
    least) varies between runs and identical tensors would get different files and checksums.
    Offsets in the header are relative to the tensor data, so reordering keys changes nothing else.
    """
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + length])
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % HEADER_ALIGNMENT)
    return struct.pack("<Q", len(text)) + text + data[8 + length:]


def torch_payload(tensors: Mapping[str, Any], metadata: dict[str, str] | None = None) -> bytes:
    """Canonical safetensors bytes of torch tensors."""
    from safetensors.torch import save

    return canonical_safetensors(save(dict(tensors), metadata=metadata))


def numpy_payload(arrays: Mapping[str, Any], metadata: dict[str, str] | None = None) -> bytes:
    """Canonical safetensors bytes of numpy arrays."""
    from safetensors.numpy import save

    return canonical_safetensors(save(dict(arrays), metadata=metadata))


def write_saved(directory: str | Path, fmt: str, payload_file: str, payload: bytes, fields: dict[str, Any]) -> Path:
    """Write ``payload`` then the JSON record holding its checksum, each atomically, with the same permissions."""
    directory = Path(directory)
    with atomic_path(directory / payload_file) as tmp:
        tmp.write_bytes(payload)
    write_json(directory / CONFIG_FILE, {"format": fmt, "dive_version": __version__, **fields,
                                         CHECKSUM_KEY: sha256_bytes(payload)})
    return directory
