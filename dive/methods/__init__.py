"""Compression methods, all behind :class:`~dive.methods.base.Method`.

Adding a method = one module defining a ``Method`` subclass + one line in ``REGISTRY``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dive.config import from_dict
from dive.errors import DiveError
from dive.methods.autoencoder import Autoencoder
from dive.methods.base import Method, TorchAdapter, read_method_folder
from dive.methods.dive import Dive
from dive.methods.dive_ablations import DiveNoContrast, DiveSingleHead
from dive.methods.frozen import Frozen
from dive.methods.matryoshka_adaptor import MatryoshkaAdaptor
from dive.methods.pca import Pca
from dive.methods.search_adaptor import SearchAdaptor
from dive.methods.smec import Smec
from dive.methods.truncate import Truncate

REGISTRY: dict[str, type[Method]] = {
    method.name: method
    for method in (
        Frozen,
        Truncate,
        Dive,
        MatryoshkaAdaptor,
        SearchAdaptor,
        Smec,
        Pca,
        Autoencoder,
        DiveNoContrast,
        DiveSingleHead,
    )
}


def method_class(name: str) -> type[Method]:
    try:
        return REGISTRY[name]
    except KeyError:
        raise DiveError(f"unknown method {name!r}; choose one of {', '.join(REGISTRY)}") from None


def create_method(name: str, dataset: str | None = None, **overrides: Any) -> Method:
    """A method with the paper's defaults for ``dataset``, then ``overrides`` (nested dicts allowed).

    ``dim`` is ignored by methods without a target dimension (``frozen``).
    """
    cls = method_class(name)
    config = cls.default_config(dataset)
    known = {field for field in getattr(config, "__dataclass_fields__", {})}
    if "dim" not in known:
        overrides.pop("dim", None)
    return cls(from_dict(cls.Config, overrides, config))


def load_method(directory: str | Path) -> Method:
    """Load a method saved with ``method.save(directory)``: JSON + safetensors, no code executed."""
    record, tensors = read_method_folder(directory)
    return method_class(record["method"]).from_saved(record, tensors)


__all__ = ["REGISTRY", "Method", "TorchAdapter", "create_method", "load_method", "method_class"]
