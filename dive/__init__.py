"""dive: make retrieval embeddings small without making search worse."""

__version__ = "0.1.0"

from dive.errors import DiveError  # noqa: E402

__all__ = ["DiveError", "__version__", "load"]


def load(directory):
    """Load a fitted method saved with ``method.save(directory)`` (JSON + safetensors, no code runs)."""
    from dive.methods import load_method

    return load_method(directory)
