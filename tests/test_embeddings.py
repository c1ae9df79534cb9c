"""Sentence embeddings: the built-in ONNX encoder and its tokeniser, the cache, the settings, and
(when installed) the torch extra.

The built-in encoder is tested for real (it ships in the package).  The default test run does not
install the torch extra (a large download): the test that needs it skips with a reason; the cache
and the settings path are tested with a stand-in encoder that counts what it encodes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from digest import embeddings as emb
from digest.errors import ConfigError
from digest.rank import Corpus, IdMap, TrainData, make_ranker

needs_extra = pytest.mark.skipif(
    not emb.available("minilm-torch"),
    reason="embeddings extra not installed (pip install 'digest[embeddings]'); CI skips it on purpose",
)


class FakeEncoder(emb.Encoder):
    """Deterministic vectors from a hash of the text; counts what it encodes."""

    def __init__(self) -> None:
        self.encoded: list[str] = []

    def encode(self, texts, *, progress=None):
        self.encoded.extend(texts)
        out = (
            np.stack([np.random.default_rng(abs(hash(t)) % 2**32).normal(size=emb.DIM) for t in texts])
            if texts
            else np.zeros((0, emb.DIM))
        )
        return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float32)


def test_cache_encodes_only_new_texts(tmp_path: Path) -> None:
    enc = FakeEncoder()
    a = emb.embed_texts(["alpha", "beta", "alpha"], tmp_path, encoder=enc)
    assert enc.encoded == ["alpha", "beta"]  # a repeated text is encoded once
    np.testing.assert_array_equal(a[0], a[2])
    b = emb.embed_texts(["beta", "gamma", "alpha"], tmp_path, encoder=enc)
    assert enc.encoded == ["alpha", "beta", "gamma"]  # only gamma was new
    np.testing.assert_array_equal(b[0], a[1])
    np.testing.assert_array_equal(b[2], a[0])
    assert emb.embed_texts([], tmp_path, encoder=enc).shape == (0, emb.DIM)


def test_cache_survives_a_broken_shard_and_compacts(tmp_path: Path) -> None:
    enc = FakeEncoder()
    for i in range(emb.MAX_SHARDS + 2):
        emb.embed_texts([f"t{i}"], tmp_path, encoder=enc)
    folder = tmp_path / enc.key
    assert len(list(folder.glob("shard-*.npz"))) <= emb.MAX_SHARDS
    (folder / "shard-99999999999999999999-broken.npz").write_bytes(b"not a zip")
    enc.encoded.clear()
    emb.embed_texts([f"t{i}" for i in range(emb.MAX_SHARDS + 2)], tmp_path, encoder=enc)
    assert enc.encoded == []


def _settings(tmp_path: Path, on: bool | str):
    from digest.settings import Settings

    return Settings.model_validate({"data_dir": str(tmp_path), "ranking": {"embeddings": on}})


def test_setting_off_adds_nothing(tmp_path: Path) -> None:
    corpus = Corpus.from_records([("p1", "deep learning", "")])
    assert emb.ranking_options(_settings(tmp_path, False), corpus) == {}


def test_setting_torch_without_extra_is_a_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(emb, "available", lambda model="minilm": model != "minilm-torch")
    corpus = Corpus.from_records([("p1", "deep learning", "")])
    with pytest.raises(ConfigError, match=r"digest\[embeddings\]"):
        emb.ranking_options(_settings(tmp_path, "minilm-torch"), corpus)


def test_setting_defaults_to_the_built_in_model_and_reads_the_old_switch(tmp_path: Path) -> None:
    from digest.settings import Settings

    assert Settings.model_validate({"data_dir": str(tmp_path)}).ranking.embeddings == "minilm"
    assert _settings(tmp_path, True).ranking.embeddings == "minilm"
    assert _settings(tmp_path, False).ranking.embeddings == "none"


def test_hybrid_with_embeddings_keeps_the_contract() -> None:
    titles = [
        "protein folding dynamics",
        "protein structure prediction",
        "galaxy dark matter halo",
        "galaxy cluster lensing",
        "",
    ]
    corpus = Corpus.from_records([(f"p{i}", t, "") for i, t in enumerate(titles)])
    data = TrainData.from_pairs(corpus, IdMap(["a", "b"]), [("a", "p0"), ("b", "p2"), ("b", "p3")])
    vecs = FakeEncoder().encode(corpus.texts())
    r = make_ranker("hybrid", embeddings=vecs).fit(data)
    s = r.score(np.arange(2), np.arange(5))
    assert s.shape == (2, 5) and s.dtype == np.float32 and np.isfinite(s).all()
    assert "emb" in r.components(np.arange(2), np.arange(5))
    assert r.explain_many(np.arange(2), np.tile(np.arange(5), (2, 1))) == [r.explain(u, np.arange(5)) for u in range(2)]
    with pytest.raises(ValueError, match="one row per corpus paper"):
        make_ranker("hybrid", embeddings=vecs[:2]).fit(data)


TEXTS = [
    "Protein folding with deep networks",
    "Deep learning predicts protein structure",
    "Dark matter halos of dwarf galaxies",
    "",
]


def test_built_in_encoder_is_unit_meaningful_and_cached(tmp_path: Path) -> None:
    assert emb.available("minilm")
    v = emb.embed_texts(TEXTS, tmp_path)
    assert v.shape == (4, emb.DIM) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-4)  # "" is [CLS] [SEP]: a vector too
    assert v[0] @ v[1] > v[0] @ v[2] + 0.2
    assert (tmp_path / emb.OnnxEncoder().key).is_dir()
    again = emb.embed_texts(TEXTS, tmp_path)  # from the cache
    np.testing.assert_allclose(again, v, atol=1e-6)
    # the order texts come in does not matter; other batch-mates move a vector a little (int8
    # activations are scaled per batch), which is why a paper's vector is cached once made
    shuffled = emb.OnnxEncoder().encode(TEXTS[::-1])
    np.testing.assert_allclose(shuffled[::-1], v, atol=1e-5)
    alone = emb.OnnxEncoder(batch_size=1).encode(TEXTS)
    assert ((alone * v).sum(axis=1) > 0.97).all()


def test_wordpiece_matches_the_models_own_tokeniser() -> None:
    # ids from the Hugging Face tokenizer of all-MiniLM-L6-v2 (add_special_tokens=False): accents,
    # punctuation, a soft hyphen and a C1 control character, CJK, an over-long word
    tok = emb.WordPiece.from_file(emb.VOCAB_FILE)
    assert tok.ids("Café-au-lait: Naïve Bayes, 3.5% of RNA-seq reads (in vivo)!") == [
        7668, 1011, 8740, 1011, 21110, 2102, 1024, 15743, 3016, 2229, 1010, 1017, 1012, 1019, 1003, 1997,
        12987, 1011, 7367, 4160, 9631, 1006, 1999, 24269, 1007, 999,
    ]  # fmt: skip
    assert tok.ids("Transcriptome\u00ad\x90wide 量子 αβ-sheets ±0.1") == [
        24051, 8462, 22517, 100, 1816, 1155, 29720, 1011, 8697, 1081, 2692, 1012, 1015,
    ]  # fmt: skip
    assert tok.ids("x" * 101 + " ok") == [100, 7929]
    assert tok.ids("") == []


@needs_extra
def test_torch_extra_is_offline_and_agrees_with_the_built_in_model(tmp_path: Path) -> None:
    v = emb.embed_texts(TEXTS[:3], tmp_path, encoder=emb.TorchEncoder())
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-4)
    import os

    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    built_in = emb.OnnxEncoder().encode(TEXTS[:3])
    assert ((v * built_in).sum(axis=1) > 0.95).all()


def test_cache_finds_every_key_again(tmp_path: Path) -> None:
    # regression: raw digest bytes ending in NUL were cut by numpy's fixed-width bytes and never found again
    enc = FakeEncoder()
    texts = [f"title {i}" for i in range(700)]
    emb.embed_texts(texts, tmp_path, encoder=enc)
    enc.encoded.clear()
    emb.embed_texts(texts, tmp_path, encoder=enc)
    assert enc.encoded == []


def test_setting_on_uses_the_cache_under_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {}

    def fake(texts, cache_dir, **_):
        calls["dir"] = Path(cache_dir)
        return FakeEncoder().encode(list(texts))

    monkeypatch.setattr(emb, "embed_texts", fake)
    corpus = Corpus.from_records([("p1", "deep learning", ""), ("p2", "graph theory", "an abstract")])
    opts = emb.ranking_options(_settings(tmp_path, True), corpus)
    assert opts["embeddings"].shape == (2, emb.DIM)
    assert opts["embedding_model"] == emb.OnnxEncoder().key  # a saved fit of another model is not reused
    assert calls["dir"] == tmp_path / "cache" / "embeddings"
    from digest.settings import Settings

    content_only = Settings.model_validate(
        {"data_dir": str(tmp_path), "ranking": {"embeddings": True, "ranker": "content"}}
    )
    assert emb.ranking_options(content_only, corpus) == {}
