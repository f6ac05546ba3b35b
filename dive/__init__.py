"""dive: make retrieval embeddings small without making search worse."""

__version__ = "0.1.0"

from dive.errors import DiveError  # noqa: E402

__all__ = ["DiveError", "__version__", "load"]


def load(directory):
    """Load a saved pipeline (``dive train --out``) or method folder as a :class:`~dive.pipeline.Pipeline`.

    JSON + safetensors only, checksums verified: loading never runs code.
    """
    # Not a top-level import: every ``import dive.<module>`` runs this file first, and the package
    # root must not pull the top layer (pipeline -> methods, codecs, torch) into the lower ones.
    from dive.pipeline import Pipeline

    return Pipeline.load(directory)
