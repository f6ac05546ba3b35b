"""Base-model identity: which model (and which prompts) made a set of vectors, and the check that two agree.

A pipeline trained on one model's vectors is meaningless on another model's vectors of the same
width, and so is one trained on vectors made with prompts ("query: ", "passage: ") applied to
vectors made without. :class:`ModelIdentity` names the model folder, the SHA-256 over its files
(the same digest whose first 12 hex digits key the embedding cache, see
:func:`dive.encode.model_digest`), and the prompts. It is recorded in ``pipeline.json``, in a
vectors folder's ``model.json`` (``dive embed``), and carried by :class:`~dive.data.sets.Embeddings`.

:func:`check_same_model` refuses a mismatch with one line naming both. Where one side is unknown
(a pipeline saved before dive recorded it, or a user's vectors folder without ``model.json``) it
logs a warning and lets the vectors through: refusing would make every older pipeline unusable,
and a user's own vectors carry no model to compare.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from dive.errors import DiveError, short_repr

log = logging.getLogger(__name__)

IDENTITY_FILE = "model.json"
"""The identity of a vectors folder's vectors, beside ``corpus.npy`` (written by ``dive embed``)."""
SHA256_HEX = 64


@dataclass(frozen=True)
class ModelIdentity:
    """What made a set of vectors.

    Attributes:
        name: the model folder's name (e.g. ``all-MiniLM-L6-v2``), for people.
        sha256: SHA-256 over the folder's files (``README.md`` excluded), for the check.
        query_prompt: text put before every query, or None.
        doc_prompt: text put before every document, or None.
    """

    name: str
    sha256: str
    query_prompt: str | None = None
    doc_prompt: str | None = None

    def __str__(self) -> str:
        prompts = [f"{kind} prompt {prompt!r}" for kind, prompt in (("query", self.query_prompt),
                                                                    ("doc", self.doc_prompt)) if prompt]
        return f"{self.name} (sha256 {self.sha256[:12]}{', ' + ', '.join(prompts) if prompts else ''})"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any, where: str) -> "ModelIdentity":
        """The identity a saved record holds; anything else is one DiveError naming ``where``."""
        fields = {"name": str, "sha256": str, "query_prompt": (str, type(None)), "doc_prompt": (str, type(None))}
        if not isinstance(data, dict) or set(data) - set(fields) or not {"name", "sha256"} <= set(data):
            raise DiveError(f"{where}: the base model must be a mapping of {', '.join(fields)}, got {short_repr(data)}")
        for name, kind in fields.items():
            if name in data and not isinstance(data[name], kind):
                raise DiveError(f"{where}: the base model's {name!r} must be text, got {short_repr(data[name])}")
        if len(data["sha256"]) != SHA256_HEX or any(char not in "0123456789abcdef" for char in data["sha256"]):
            raise DiveError(f"{where}: the base model's 'sha256' must be 64 hex digits, "
                            f"got {short_repr(data['sha256'])}")
        return cls(**data)


def check_same_model(expected: ModelIdentity | None, actual: ModelIdentity | None, expected_what: str,
                     actual_what: str, prompts: bool = True) -> None:
    """Refuse ``actual`` unless it is ``expected``'s model (and, with ``prompts``, its prompts).

    The refusal is one line naming both; an unknown side is a warning (see the module docstring).
    """
    if expected is None or actual is None:
        unknown = expected_what if expected is None else actual_what
        log.warning("%s records no base model; not checked against %s", unknown,
                    actual_what if expected is None else expected_what)
        return
    same = expected.sha256 == actual.sha256
    if prompts:
        same = same and (expected.query_prompt, expected.doc_prompt) == (actual.query_prompt, actual.doc_prompt)
    if not same:
        raise DiveError(f"base model mismatch: {expected_what}: {expected}; {actual_what}: {actual}")


def read_identity(folder: str | Path) -> ModelIdentity | None:
    """The identity recorded in ``folder/model.json``, or None when the folder has none."""
    path = Path(folder) / IDENTITY_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise DiveError(f"{path}: not readable JSON ({error})") from None
    return ModelIdentity.from_dict(data, str(path))
