"""Which codec settings equal which setting of the systems people deploy (the frontier report's note).

One function, :func:`equivalent`, maps a codec as a result record holds it (``{"name", "config"}``,
or ``None`` for float32) to one sentence: the database or library setting whose stored codes
and candidate lists equal dive's, or why none does. The facts behind each sentence:

* sentence-transformers ``quantize_embeddings``: ``ubinary`` = ``np.packbits(x > 0)``; ``uint8``
  = ``clip(floor((x - min) / step), 0, 255)`` with the ``[2, dim]`` ``ranges``; ``int8`` = that
  minus 128; ``semantic_search_faiss``/``semantic_search_usearch`` fetch ``rescore_multiplier * k``
  candidates.
* Qdrant binary quantization stores ``x > 0`` bits and rescores ``oversampling * limit``
  candidates with the original float vectors; its scalar ``int8`` uses one range for all
  dimensions (a quantile of all values), so no per-dimension dive setting equals it.
* pgvector: ``binary_quantize(v)::bit(d)`` is ``x > 0``; ``halfvec`` is IEEE float16; it has no
  int8 or product-quantised type.
* faiss: ``IndexScalarQuantizer(QT_8bit)`` trains per-dimension min/max and encodes by flooring;
  ``IndexScalarQuantizer(QT_fp16)`` is float16; ``IndexPQ(d, m, nbits)`` is dive's ``pq``.
"""

from __future__ import annotations

from typing import Any

FLOAT32 = ("exact float32: Qdrant/pgvector `vector`, faiss `IndexFlatIP`, sentence-transformers "
           "`precision=\"float32\"`")
FLOAT16 = "pgvector `halfvec`, Qdrant `datatype: float16`, faiss `QT_fp16` (IEEE round-to-nearest-even)"
LOSSLESS = "no database stores it; search is exact float32 (equal to float32 anywhere)"
PQ = ("faiss `IndexPQ(d, m, nbits)` with the same codebooks; Qdrant's product quantization and pgvector "
      "have no equal setting")
INT8_FLOOR = ("sentence-transformers `quantize_embeddings(precision=\"uint8\", ranges=codec.ranges)` (`int8`: "
              "minus 128) and faiss `QT_8bit` (per-dimension min/max, floor); Qdrant's scalar int8 uses one range "
              "for all dimensions, pgvector has no int8 type")
INT8_NEAREST = ("dive's own rounding (nearest level); faiss `QT_8bit` decodes the same values (`dive index`), "
                "sentence-transformers and Qdrant do not: use rounding=floor to match sentence-transformers")
BINARY_MEDIAN = ("no database: Qdrant, pgvector and sentence-transformers binarise at zero; use threshold=zero "
                 "to predict them")


def equivalent(codec: dict[str, Any] | None) -> str:
    """The deployed setting that equals ``codec`` (a record's ``codec`` field; ``None`` = float32)."""
    if codec is None:
        return FLOAT32
    name, config = codec.get("name"), codec.get("config") or {}
    if name == "int8":
        floor = config.get("rounding", "nearest") == "floor" and not config.get("calibration_quantile", 0.0)
        return INT8_FLOOR if floor else INT8_NEAREST
    if name == "binary":
        return _binary(config)
    return {"float16": FLOAT16, "lossless": LOSSLESS, "pq": PQ}.get(name, "no known equivalent")


def _binary(config: dict[str, Any]) -> str:
    """Binary codes and candidates: which systems store the same bits and fetch the same candidates."""
    if config.get("threshold", "median") != "zero":
        return BINARY_MEDIAN
    bits = "bits equal Qdrant binary quantization, pgvector `binary_quantize` and sentence-transformers `ubinary`"
    oversampling, rescore = config.get("oversampling", 0.0), config.get("rescore", 0)
    if oversampling:
        source = "an int8 copy" if config.get("rescore_with") == "int8" else "the 1-bit reconstruction"
        return (f"{bits}; candidates equal Qdrant `oversampling: {oversampling:g}` and sentence-transformers "
                f"`rescore_multiplier={oversampling:g}` (dive rescores with {source}, Qdrant with the original "
                "float32 vectors, so its rescored scores can only be higher)")
    if rescore:
        return (f"{bits}; an absolute {rescore} candidates equals pgvector's re-ranking subquery with "
                f"`LIMIT {rescore}`, not an oversampling multiple")
    return f"{bits}; Hamming ranking without rescoring (Qdrant `rescore: false`)"
