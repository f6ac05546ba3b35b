"""Post-hoc compression (SPEC "Post-hoc compression"): codecs applied to vectors that exist.

One codec per module, all behind :class:`~dive.quantize.base.Codec`::

    codec = create_codec("int8").fit(corpus_vectors)
    codes = codec.encode(corpus_vectors)
    scores, rows = codec.search(query_vectors, codes, k=10)
    searcher = codec.searcher(codes)  # the same search as a dive.search.Searcher
    codec.bytes_per_vector            # report it next to every metric
    codec.save("int8-codec"); load_codec("int8-codec")

Adding a codec = one module defining a ``Codec`` subclass + one entry in ``CODECS``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dive.errors import DiveError, short_repr
from dive.quantize.base import Codec, CodesSearch, FaissCodesSearch, evaluate_codec, read_codec_folder, retrieve_codes
from dive.quantize.binary import Binary
from dive.quantize.float16 import Float16
from dive.quantize.int8 import Int8
from dive.quantize.lossless import Lossless
from dive.quantize.pq import PQ

CODECS: dict[str, type[Codec]] = {codec.name: codec for codec in (Float16, Int8, Binary, PQ, Lossless)}


def codec_class(name: str) -> type[Codec]:
    try:
        return CODECS[name]
    except (KeyError, TypeError):
        raise DiveError(f"unknown codec {short_repr(name)}; choose one of {', '.join(CODECS)}") from None


def create_codec(name: str, **settings: Any) -> Codec:
    """An unfitted codec ``name`` with its defaults, then ``settings`` (its Config's fields)."""
    return codec_class(name)(**settings)


def load_codec(directory: str | Path, config_sha256: str | None = None, config_mismatch: str = "") -> Codec:
    """Load any codec saved with ``codec.save(directory)`` (JSON + safetensors, checksum verified).

    With ``config_sha256`` (recorded by a pipeline), ``config.json`` must have that checksum,
    checked before any of its fields is read; ``config_mismatch`` is the refusal.
    """
    record, state = read_codec_folder(directory, config_sha256, config_mismatch)
    try:
        cls = codec_class(record.get("codec"))
    except DiveError as error:
        raise DiveError(f"{Path(directory) / 'config.json'}: {error}") from None
    return cls.from_saved(directory, record, state)


__all__ = ["CODECS", "Binary", "Codec", "CodesSearch", "FaissCodesSearch", "Float16", "Int8", "Lossless", "PQ",
           "codec_class", "create_codec", "evaluate_codec", "load_codec", "retrieve_codes"]
