"""The optional sentence-embedding extra: cache, settings, and (when installed) the encoder.

The default test run does not install the extra (torch is a large download): the tests that need
the model skip with a reason; the cache and the settings path are tested with a fake encoder.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from digest import embeddings as emb
from digest.errors import ConfigError
from digest.rank import Corpus, IdMap, TrainData, make_ranker

needs_extra = pytest.mark.skipif(
    not emb.available(),
    reason="embeddings extra not installed (pip install 'digest[embeddings]'); CI skips it on purpose",
)


class FakeEncoder(emb.Encoder):
    """Deterministic vectors from a hash of the text; counts what it encodes."""

    def __init__(self) -> None:
        super().__init__()
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


def _settings(tmp_path: Path, on: bool):
    from digest.settings import Settings

    return Settings.model_validate({"data_dir": str(tmp_path), "ranking": {"embeddings": on}})


def test_setting_off_adds_nothing(tmp_path: Path) -> None:
    corpus = Corpus.from_records([("p1", "deep learning", "")])
    assert emb.ranking_options(_settings(tmp_path, False), corpus) == {}


def test_setting_on_without_extra_is_a_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(emb, "available", lambda: False)
    corpus = Corpus.from_records([("p1", "deep learning", "")])
    with pytest.raises(ConfigError, match="embeddings extra"):
        emb.ranking_options(_settings(tmp_path, True), corpus)


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


@needs_extra
def test_encoder_is_offline_unit_and_meaningful(tmp_path: Path) -> None:
    texts = [
        "Protein folding with deep networks",
        "Deep learning predicts protein structure",
        "Dark matter halos of dwarf galaxies",
        "",
    ]
    v = emb.embed_texts(texts, tmp_path)
    assert v.shape == (4, emb.DIM) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v[:3], axis=1), 1.0, atol=1e-4)
    assert v[0] @ v[1] > v[0] @ v[2] + 0.2
    import os

    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    again = emb.embed_texts(texts, tmp_path)  # from the cache
    np.testing.assert_allclose(again, v, atol=1e-6)


def test_cache_finds_every_key_again(tmp_path: Path) -> None:
    # regression: raw digest bytes ending in NUL were cut by numpy's fixed-width bytes and never found again
    enc = FakeEncoder()
    texts = [f"title {i}" for i in range(700)]
    emb.embed_texts(texts, tmp_path, encoder=enc)
    enc.encoded.clear()
    emb.embed_texts(texts, tmp_path, encoder=enc)
    assert enc.encoded == []


def test_setting_on_uses_the_cache_under_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(emb, "available", lambda: True)
    calls = {}

    def fake(texts, cache_dir, **_):
        calls["dir"] = Path(cache_dir)
        return FakeEncoder().encode(list(texts))

    monkeypatch.setattr(emb, "embed_texts", fake)
    corpus = Corpus.from_records([("p1", "deep learning", ""), ("p2", "graph theory", "an abstract")])
    opts = emb.ranking_options(_settings(tmp_path, True), corpus)
    assert opts["embeddings"].shape == (2, emb.DIM)
    assert calls["dir"] == tmp_path / "cache" / "embeddings"
    from digest.settings import Settings

    content_only = Settings.model_validate(
        {"data_dir": str(tmp_path), "ranking": {"embeddings": True, "ranker": "content"}}
    )
    assert emb.ranking_options(content_only, corpus) == {}
