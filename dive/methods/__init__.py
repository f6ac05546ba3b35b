"""Compression methods, all behind :class:`~dive.methods.base.Method`.

Adding a method = one module defining a ``Method`` subclass + one line in ``REGISTRY``. The
class declares what it is (``role``, ``ablates``, ``trains``, ``supervised``, ``tunable``,
``citation``); the CLI, grid, reports and figures read that through the helpers below, and
report tables list methods in registry order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dive.config import from_dict
from dive.errors import DiveError, short_repr
from dive.methods.autoencoder import Autoencoder
from dive.methods.base import Citation, Method, Role, TorchAdapter, read_method_folder
from dive.methods.dive import Dive
from dive.methods.dive_ablations import DiveNoContrast, DiveSingleHead
from dive.methods.dive_anchored import DiveAnchored
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
        Pca,
        Autoencoder,
        MatryoshkaAdaptor,
        SearchAdaptor,
        Smec,
        Dive,
        DiveAnchored,
        DiveNoContrast,
        DiveSingleHead,
    )
}
"""Every method by name; report columns follow this order (reference, baselines, main, ablations)."""


def method_class(name: str) -> type[Method]:
    try:
        return REGISTRY[name]
    except (KeyError, TypeError):  # TypeError: a name read from a file that is not text
        raise DiveError(f"unknown method {short_repr(name)}; choose one of {', '.join(REGISTRY)}") from None


def methods_with_role(*roles: Role) -> list[str]:
    """Names of the registered methods whose ``role`` is one of ``roles``, in registry order."""
    return [name for name, cls in REGISTRY.items() if cls.role in roles]


def ablations_of(name: str) -> list[str]:
    """Names of the registered ablations of method ``name``, in registry order."""
    return [other for other, cls in REGISTRY.items() if cls.role == "ablation" and cls.ablates == name]


def method_role(name: str) -> Role | None:
    """The role of method ``name``, or None for a name not in the registry (e.g. an old record's)."""
    cls = REGISTRY.get(name)
    return cls.role if cls is not None else None


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


def load_method(directory: str | Path, config_sha256: str | None = None, config_mismatch: str = "") -> Method:
    """Load a method saved with ``method.save(directory)``: JSON + safetensors, no code executed.

    With ``config_sha256`` (recorded by a pipeline or an index), ``config.json`` must have that
    checksum, checked before any of its fields is read; ``config_mismatch`` is the refusal.
    """
    record, tensors = read_method_folder(directory, config_sha256, config_mismatch)
    try:
        cls = method_class(record.get("method"))
    except DiveError as error:
        raise DiveError(f"{Path(directory) / 'config.json'}: {error}") from None
    return cls.from_saved(record, tensors, directory)


__all__ = ["REGISTRY", "Citation", "Method", "Role", "TorchAdapter", "ablations_of", "create_method", "load_method",
           "method_class", "method_role", "methods_with_role"]
