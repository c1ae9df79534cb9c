"""The daily run for a large community: the saved fit folded in each day (`HybridRanker.update`,
`digest.rank.saved`) and ranking shared among forked processes.

A synthetic community in three topics, large enough for every hybrid component (ALS included).
The fold-in must change nothing when nothing changed, rank a new reader's and a new paper's topic
like a refit does, and the saved fit must be reused, refitted and recovered when it should be.
"""

from __future__ import annotations

import logging
import pickle
import random
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from digest.rank import Corpus, IdMap, TrainData
from digest.rank.base import top_k_rows
from digest.rank.hybrid import HybridRanker
from digest.rank.saved import FORMAT, model_path, ranker_for_day

TOPICS = {
    "bio": "protein folding enzyme kinetics genome sequencing cell membrane receptor binding molecular dynamics",
    "astro": "galaxy dark matter halo lensing redshift survey cosmology supernova telescope stellar",
    "ml": "neural network transformer attention gradient descent training dataset benchmark language model",
}
NOW = datetime(2026, 11, 24, 6, 0, tzinfo=UTC)


def _papers(rng: random.Random, per_topic: int, start: int) -> list[tuple[str, str, str, str]]:
    out = []
    for topic, words in TOPICS.items():
        pool = words.split()
        for n in range(start, start + per_topic):
            title = " ".join(rng.sample(pool, 4))
            abstract = " ".join(rng.sample(pool, 6)) + " we study " + " ".join(rng.sample(pool, 3))
            out.append((f"{topic}-{n}", title, abstract, topic))
    return out


def community(*, new_papers: int = 0, new_readers: int = 0, seed: int = 1) -> TrainData:
    """60 papers and 12 readers per topic (each liking 8 papers of their topic), plus extras."""
    rng = random.Random(seed)
    papers = _papers(rng, 60, 0) + _papers(random.Random(99), new_papers, 1000)
    corpus = Corpus.from_records((pid, t, a) for pid, t, a, _ in papers)
    by_topic: dict[str, list[str]] = {}
    for pid, _, _, topic in papers[: 60 * len(TOPICS)]:
        by_topic.setdefault(topic, []).append(pid)
    readers, likes = [], []
    for topic in TOPICS:
        for i in range(12 + new_readers):
            uid = f"{topic}{i}"
            readers.append(uid)
            likes += [(uid, pid) for pid in random.Random(f"{seed}{uid}").sample(by_topic[topic], 8)]
    return TrainData.from_pairs(corpus, IdMap(readers), likes)


def _topic(data: TrainData, row: int) -> str:
    return data.corpus.ids.ids[row].split("-")[0]


def test_update_with_nothing_new_changes_no_score() -> None:
    data = community()
    ranker = HybridRanker().fit(data)
    assert "cf" in ranker.state.parts, "the community must be large enough for ALS"
    users, cands = np.arange(len(data.users)), np.arange(len(data.corpus))
    before = ranker.score(users, cands)
    ranker.update(community())
    assert ranker.last_update == {"new_papers": 0, "new_users": 0, "changed_users": 0}
    np.testing.assert_allclose(ranker.score(users, cands), before, rtol=1e-5, atol=1e-5)


def test_update_ranks_new_papers_and_readers_like_a_refit() -> None:
    old, new = community(), community(new_papers=10, new_readers=2)
    folded = HybridRanker().fit(old)
    folded.prepare_update()
    folded = pickle.loads(pickle.dumps(folded))  # as the daily run gets it: from the saved file
    folded.update(new)
    refit = HybridRanker().fit(new)
    assert folded.last_update["new_papers"] == 30 and folded.last_update["new_users"] == 6
    fresh = np.flatnonzero([pid.split("-")[1] >= "1000" for pid in new.corpus.ids.ids])
    readers = np.arange(len(new.users))
    top_fold = fresh[top_k_rows(folded.score(readers, fresh), 10)]
    top_refit = fresh[top_k_rows(refit.score(readers, fresh), 10)]
    for u, f_row, r_row in zip(readers, top_fold, top_refit):
        topic = new.users.ids[u].rstrip("0123456789")
        # every reader, old or new, gets the new papers of their own topic first, as a refit does
        assert {_topic(new, p) for p in f_row} == {topic}, (new.users.ids[u], [new.corpus.ids.ids[p] for p in f_row])
        assert {_topic(new, p) for p in r_row} == {topic}
    # reasons work on the folded ranker (the saved file carried no texts; update brought them)
    assert all(r for r in folded.explain(0, fresh[:5]))


def test_a_changed_reader_is_folded_in() -> None:
    data = community()
    ranker = HybridRanker().fit(data)
    # bio0 now also likes 8 astro papers: their profile moves, nobody else's does
    extra = [("bio0", pid) for pid in data.corpus.ids.ids[60:68]]
    pairs = [(data.users.ids[u], data.corpus.ids.ids[p]) for u, p in zip(*data.likes.nonzero())] + extra
    changed = TrainData.from_pairs(data.corpus, data.users, pairs)
    users, cands = np.arange(len(data.users)), np.arange(len(data.corpus))
    before = ranker.score(users, cands)
    ranker.update(changed)
    assert ranker.last_update["changed_users"] == 1
    after = ranker.score(users, cands)
    u = data.users.index("bio0")
    astro = np.arange(60, 120)
    assert after[u, astro].mean() > before[u, astro].mean() + 0.5
    others = np.delete(users, u)
    np.testing.assert_allclose(after[others], before[others], rtol=1e-4, atol=1e-3)  # the trend moved a little


def test_saved_fit_is_reused_then_refitted(tmp_path) -> None:
    data = community()
    _, report = ranker_for_day("hybrid", {}, data, NOW, data_dir=tmp_path, refit_days=7)
    assert report.refit and report.reason == "no saved fit"
    path = model_path(tmp_path, "hybrid")
    saved = path.read_bytes()
    assert data.corpus.abstracts[0].encode() not in saved and data.corpus.titles[1].encode() not in saved  # no texts
    # the next day: folded in, not refitted
    _ranker, report = ranker_for_day(
        "hybrid", {}, community(new_papers=5), NOW + timedelta(days=1), data_dir=tmp_path, refit_days=7
    )
    assert not report.refit and report.new_papers == 15 and report.fitted_at == NOW
    assert "updated" in str(report)
    # a week later: refitted, and the new fit is saved
    _, report = ranker_for_day(
        "hybrid", {}, community(new_papers=5), NOW + timedelta(days=7), data_dir=tmp_path, refit_days=7
    )
    assert report.refit and "7 day(s) old" in report.reason
    _, report = ranker_for_day(
        "hybrid", {}, community(new_papers=5), NOW + timedelta(days=8), data_dir=tmp_path, refit_days=7
    )
    assert not report.refit and report.fitted_at == NOW + timedelta(days=7)
    # other settings: refitted
    _, report = ranker_for_day(
        "hybrid", {"dislike_weight": 0.2}, community(), NOW + timedelta(days=8), data_dir=tmp_path, refit_days=7
    )
    assert report.refit and report.reason == "ranking settings changed"
    # a community that doubled: refitted
    _, report = ranker_for_day(
        "hybrid",
        {"dislike_weight": 0.2},
        community(new_papers=100),
        NOW + timedelta(days=9),
        data_dir=tmp_path,
        refit_days=7,
    )
    assert report.refit and "grew" in report.reason


def test_unreadable_saved_fit_is_refitted(tmp_path) -> None:
    ranker_for_day("hybrid", {}, community(), NOW, data_dir=tmp_path, refit_days=7)
    path = model_path(tmp_path, "hybrid")
    path.write_bytes(path.read_bytes()[:1000])  # truncated, as by a full disk
    ranker, report = ranker_for_day("hybrid", {}, community(), NOW + timedelta(days=1), data_dir=tmp_path, refit_days=7)
    assert report.refit and "could not be read" in report.reason
    assert ranker.score(np.arange(3), np.arange(5)).shape == (3, 5)
    assert pickle.loads(path.read_bytes())["fitted_at"] == NOW + timedelta(days=1)


def test_saved_fit_of_an_older_format_is_refitted(tmp_path, caplog: pytest.LogCaptureFixture) -> None:
    """The header is read first: an older format is refused without unpickling what follows it (a
    ranker whose classes may have moved since).  A format-2 file is one pickle, header and ranker:
    refused as older when it can be read, refitted as unreadable when its classes are gone."""
    ranker_for_day("hybrid", {}, community(), NOW, data_dir=tmp_path, refit_days=7)
    path = model_path(tmp_path, "hybrid")
    with path.open("rb") as f:
        header = pickle.load(f)
    path.write_bytes(pickle.dumps({**header, "format": FORMAT - 1}) + b"not a ranker")
    with caplog.at_level(logging.WARNING, logger="digest.rank.saved"):
        ranker, report = ranker_for_day(
            "hybrid", {}, community(), NOW + timedelta(days=1), data_dir=tmp_path, refit_days=7
        )
    assert report.refit and "older format" in report.reason
    assert "older format; refitting once" in caplog.text  # a warning, not a traceback
    path.write_bytes(pickle.dumps({**header, "format": 2, "ranker": "gone"}))  # format 2: one pickle, no ranker after
    _, report = ranker_for_day("hybrid", {}, community(), NOW + timedelta(days=1), data_dir=tmp_path, refit_days=7)
    assert report.refit and "older format" in report.reason
    assert ranker.score(np.arange(3), np.arange(5)).shape == (3, 5)


def test_saved_fit_of_another_embedding_model_is_refitted(tmp_path) -> None:
    data = community()
    vecs = np.random.default_rng(0).normal(size=(len(data.corpus), 8)).astype(np.float32)
    a = {"embeddings": vecs, "embedding_model": "model-a"}
    ranker_for_day("hybrid", a, data, NOW, data_dir=tmp_path, refit_days=7)
    _, same = ranker_for_day("hybrid", a, data, NOW + timedelta(days=1), data_dir=tmp_path, refit_days=7)
    assert not same.refit
    b = {**a, "embedding_model": "model-b"}
    _, other = ranker_for_day("hybrid", b, data, NOW + timedelta(days=1), data_dir=tmp_path, refit_days=7)
    assert other.refit and "settings changed" in other.reason


@pytest.mark.parametrize("name, refit_days", [("hybrid", 0), ("content", 7)])
def test_no_saved_fit_when_refitting_every_run(tmp_path, name: str, refit_days: float) -> None:
    _, report = ranker_for_day(name, {}, community(), NOW, data_dir=tmp_path, refit_days=refit_days)
    assert report.refit and not (tmp_path / "models").exists()


def test_forked_ranking_picks_the_same() -> None:
    """Blocks of readers shared among forked processes give exactly the picks of one process."""
    from digest.db import Paper, Subscriber
    from digest.pipeline import rank_subscribers

    data = community(new_papers=10)
    ranker = HybridRanker().fit(data)
    candidates = [
        Paper(id=pid, title=t, title_key=t, abstract=a, first_seen=NOW, last_changed=NOW)
        for pid, t, a in zip(data.corpus.ids.ids, data.corpus.titles, data.corpus.abstracts)
        if pid.split("-")[1] >= "1000"
    ]
    subs = [
        Subscriber(id=i, email=e, max_papers=3 + i % 3, exclude_keywords=["galaxy"] if i % 4 == 0 else [], created=NOW)
        for i, e in enumerate(data.users.ids)
    ]
    seen = {subs[1].id: {candidates[0].id}}
    one = rank_subscribers(ranker, data, subs, candidates, seen, block=5, processes=1)
    two = rank_subscribers(ranker, data, subs, candidates, seen, block=5, processes=2)

    def plain(picks: dict) -> dict:
        return {k: [(p.paper.id, round(p.score, 5), p.reason) for p in v] for k, v in picks.items()}

    assert plain(one) == plain(two)
    assert len(one) == len(subs) and all(len(one[s.id]) == s.max_papers for s in subs[1:])
    assert candidates[0].id not in [p.paper.id for p in one[subs[1].id]]
    assert not any("galaxy" in p.paper.title for p in one[subs[0].id])


def test_zscore_statistics_in_chunks_of_readers_are_the_same() -> None:
    """The per-reader statistics are worked out a chunk of readers at a time (memory at scale): any
    chunk size gives the same numbers (to the last bits BLAS may round differently for other block sizes)."""
    r = HybridRanker().fit(community())
    users = np.arange(len(r.data.users))
    sample = np.arange(len(r.data.corpus))
    whole, chunked = r.state.measure(users, sample), r.state.measure(users, sample, chunk=5)
    assert set(whole) == set(r.state.stats) and {"content", "lsa", "cf"} <= set(whole)
    for name, (mean, std) in whole.items():
        assert np.allclose(mean, chunked[name][0], rtol=1e-5, atol=1e-7), name
        assert np.allclose(std, chunked[name][1], rtol=1e-5, atol=1e-7), name
        assert len(mean) == len(users)


def test_a_saved_fit_keeps_the_fitted_vectors_not_the_raw_ones(tmp_path) -> None:
    """The raw vectors are not saved (each day's run brings them): the saved fit folds a day in
    exactly as the fit still in memory does."""
    data, day = community(), community(new_papers=5)
    vecs = np.random.default_rng(0).normal(size=(len(day.corpus), 8)).astype(np.float32)
    options = {"embeddings": vecs[: len(data.corpus)]}
    fitted, _ = ranker_for_day("hybrid", options, data, NOW, data_dir=tmp_path, refit_days=7)
    with model_path(tmp_path, "hybrid").open("rb") as f:
        pickle.load(f)  # the header
        saved = pickle.load(f)
    assert saved.raw_embeddings is None and saved.embeddings is not None
    assert fitted.raw_embeddings is not None  # the fit in memory keeps them
    loaded, report = ranker_for_day(
        "hybrid", {"embeddings": vecs}, day, NOW + timedelta(days=1), data_dir=tmp_path, refit_days=7
    )
    assert not report.refit and loaded.raw_embeddings is vecs
    fitted.update(day, embeddings=vecs)
    users, cands = np.arange(len(day.users)), np.arange(len(day.corpus))
    np.testing.assert_allclose(loaded.score(users, cands), fitted.score(users, cands), rtol=1e-5, atol=1e-5)
