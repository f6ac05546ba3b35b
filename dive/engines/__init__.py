"""Index engines: where ``dive index`` puts a compressed corpus, behind :class:`~dive.engines.base.Engine`.

``lancedb`` (default: embedded, a folder), ``qdrant`` (local mode or a server), ``faiss`` (one file,
exact per codec, or an index_factory ANN index). Adding one = a module with an ``Engine`` subclass
+ one entry in :data:`ENGINES`. The database clients are imported only when an engine is used
(``pip install 'dive-compress[db]'``).
"""

from __future__ import annotations

from dive.engines.base import Corpus, Engine, EngineConfig, stored_vectors
from dive.engines.faiss import FaissEngine
from dive.engines.lancedb import LanceDBEngine
from dive.engines.qdrant import QdrantEngine
from dive.errors import DiveError, short_repr

ENGINES: dict[str, type[Engine]] = {engine.name: engine for engine in (LanceDBEngine, QdrantEngine, FaissEngine)}
DEFAULT_ENGINE = EngineConfig.engine


def create_engine(config: EngineConfig) -> Engine:
    """The engine ``config.engine`` with ``config``; an unknown name is one line."""
    try:
        engine_class = ENGINES[config.engine]
    except (KeyError, TypeError):
        raise DiveError(f"unknown engine {short_repr(config.engine)}; choose one of {', '.join(ENGINES)}") from None
    return engine_class(config)


__all__ = ["Corpus", "DEFAULT_ENGINE", "ENGINES", "Engine", "EngineConfig", "create_engine", "stored_vectors"]
