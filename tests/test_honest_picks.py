"""Honest picks: readers' categories, the relevance floor, keyword reasons that hold, and trending
that never shows a reader what they were sent, liked, disliked or excluded.  Real SQLite files and
the real daily run (dry runs: rendered, nothing recorded)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from digest.db import Kind, Paper, Store
from digest.pipeline import ingest, may_show, run_daily, train_data, trending
from digest.rank import Corpus, IdMap, TrainData
from digest.rank.content import ContentRanker, keyword_hits
from digest.resources import sample_corpus_path
from digest.settings import load_settings
from digest.sources import wanted_categories
from digest.workers import trending_lists

from .conftest import ConfigFactory

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
SPEECH = re.compile(r"speech|speaker|audio|acoustic|voice|spoken", re.I)
SPEECH_LIKED = [
    "End-to-end Audio-visual Speech Recognition with Conformers",
    "Self-Supervised Speech Representation Learning: A Review",
]
TODAY_SPEECH = [  # the day's only speech papers, from the bundled sample
    "WavThruVec: Latent speech representation as intermediate features for neural speech synthesis",
    "Conformers are All You Need for Visual Speech Recogntion",
]
OFF_TOPIC = re.compile(r"graph|reinforcement|molecul|protein|galax|3d|point cloud|segmentation|diffusion", re.I)


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _sample() -> list[dict]:
    return [json.loads(line) for line in sample_corpus_path().read_text(encoding="utf-8").splitlines()]


def _thin_day(tmp_path: Path, make_config: ConfigFactory, floor: str = "") -> list:
    """A speech reader on a day with 2 speech papers and 12 on other topics; their picks."""
    rows = _sample()
    today = [r for r in rows if r["title"] in TODAY_SPEECH]
    assert len(today) == len(TODAY_SPEECH)
    others = [r for r in rows if OFF_TOPIC.search(r["title"]) and not SPEECH.search(f"{r['title']} {r['abstract']}")][
        :12
    ]
    fresh = {r["id"] for r in today + others}
    old = _write(tmp_path / "old.jsonl", [r for r in rows if r["id"] not in fresh])
    new = _write(tmp_path / "today.jsonl", [{**r, "published": NOW.date().isoformat()} for r in today + others])
    reader = f"""
        [ranking]
        {floor}
        [[subscribers]]
        email = "speech@example.org"
        max_papers = 10
        liked = {json.dumps(SPEECH_LIKED)}
        keywords = ["speech recognition"]
        """
    past = make_config(f'[[sources]]\nkind = "jsonl"\npath = "{old}"\n' + reader, name="past.toml")
    store = Store(past.database_url)
    try:
        ingest(store, past, NOW - timedelta(days=60))  # the back catalogue, first seen long ago
    finally:
        store.close()
    settings = make_config(f'[[sources]]\nkind = "jsonl"\npath = "{new}"\n' + reader)
    report = run_daily(NOW, settings, dry_run=True, force=True)
    (out,) = report.outcomes
    assert out.status == "dry-run", out
    return out.picks


def test_thin_day_sends_only_on_topic_papers(tmp_path: Path, make_config: ConfigFactory) -> None:
    picks = _thin_day(tmp_path, make_config)
    titles = [p.paper.title for p in picks]
    assert 0 < len(picks) < 10, titles
    assert all(SPEECH.search(f"{p.paper.title} {p.paper.abstract}") for p in picks), titles


def test_without_the_floor_the_day_is_padded(tmp_path: Path, make_config: ConfigFactory) -> None:
    """The same day with the floor off: ten picks, most of them off topic (what the floor removes)."""
    picks = _thin_day(tmp_path, make_config, floor="min_score = -1e9")
    off = [p for p in picks if not SPEECH.search(f"{p.paper.title} {p.paper.abstract}")]
    assert len(picks) == 10 and len(off) >= 5


def test_the_email_counts_what_is_sent(tmp_path: Path, make_config: ConfigFactory) -> None:
    _thin_day(tmp_path, make_config)
    (html,) = (tmp_path / "data").rglob("*.html")
    text = html.read_text(encoding="utf-8")
    n = len(re.findall(r'class="title"', text.split("Trending today")[0]))
    assert 0 < n < 10
    assert re.search(rf"here (is|are) {n} of \d+ new papers", text, re.I), text[:2000]


def _categorised(path: Path) -> Path:
    rows = [
        ("cv-1", "Object detection with sparse anchors", "Detecting objects in images.", ["cs.CV"]),
        ("cv-2", "Video segmentation at scale", "Segmenting video frames.", ["cs.CV"]),
        ("cl-1", "Machine translation for low-resource languages", "Translating text.", ["cs.CL"]),
        ("cl-2", "Parsing sentences with transformers", "Syntactic parsing of text.", ["cs.CL"]),
        ("both", "Image captioning with language models", "Describing images in text.", ["cs.CL", "cs.CV"]),
        ("lg-1", "Convergence of stochastic gradient descent", "Optimisation theory.", ["cs.LG"]),
    ]
    return _write(
        path,
        [
            {"id": i, "title": t, "abstract": a, "categories": c, "published": NOW.date().isoformat()}
            for i, t, a, c in rows
        ],
    )


def test_categories_per_reader(tmp_path: Path, make_config: ConfigFactory) -> None:
    """Two readers on one deployment each get only their category (the cross-list counts in both);
    a reader with none gets every category."""
    src = _categorised(tmp_path / "papers.jsonl")
    settings = make_config(
        f"""
        [ranking]
        ranker = "content"
        min_score = -1e9
        [[sources]]
        kind = "jsonl"
        path = "{src}"
        [[subscribers]]
        email = "cv@example.org"
        categories = ["cs.CV"]
        [[subscribers]]
        email = "cl@example.org"
        categories = ["cs.CL"]
        [[subscribers]]
        email = "all@example.org"
        [[subscribers]]
        email = "stats@example.org"
        categories = ["math.ST"]
        """
    )
    report = run_daily(NOW, settings, dry_run=True, force=True)
    (stats,) = [o for o in report.outcomes if o.email == "stats@example.org"]
    assert stats.status == "no-papers" and "none of the 6 is in their categories" in stats.detail
    got = {o.email: {p.paper.id for p in o.picks} for o in report.outcomes}
    assert got["cv@example.org"] == {"cv-1", "cv-2", "both"}
    assert got["cl@example.org"] == {"cl-1", "cl-2", "both"}
    assert got["all@example.org"] == {"cv-1", "cv-2", "cl-1", "cl-2", "both", "lg-1"}
    store = Store(settings.database_url)
    try:
        assert {s.email: s.categories for s in store.subscribers()}["cv@example.org"] == ["cs.CV"]
        assert set(store.reader_categories()) == {"cs.CV", "cs.CL", "math.ST"}
    finally:
        store.close()


def test_sources_fetch_the_union(tmp_path: Path) -> None:
    """The first arxiv source also fetches the readers' categories no arxiv source lists; others only theirs."""
    path = tmp_path / "d.toml"
    path.write_text(
        f"""
        data_dir = "{tmp_path.as_posix()}"
        [[sources]]
        kind = "arxiv"
        name = "lg"
        categories = ["cs.LG"]
        [[sources]]
        kind = "arxiv"
        name = "ro"
        categories = ["cs.RO"]
        """.replace("\n        ", "\n"),
        encoding="utf-8",
    )
    settings = load_settings(path)
    lg, ro = settings.sources
    assert wanted_categories(lg, settings, ["cs.CV", "cs.RO", "cs.CV", "cs.LG"]) == ["cs.LG", "cs.CV"]
    assert wanted_categories(ro, settings, ["cs.CV"]) == ["cs.RO"]


def test_a_keyword_reason_needs_the_keyword() -> None:
    """One shared word ("neural") is not "matches keyword graph neural networks"; the phrase, or
    nearly all of its terms, is."""
    papers = [
        ("tts", "Neural text-to-speech with flow matching", "A neural vocoder for expressive speech synthesis."),
        ("gnn", "Message passing on molecules", "We train graph neural networks on molecular graphs."),
        ("gnn2", "Scalable graph networks", "A neural model for graphs with millions of nodes."),
        ("liked", "Graph attention networks", "Attention over graph neighbourhoods."),
    ]
    corpus = Corpus.from_records(papers)
    users = IdMap(["a", "b"])
    data = TrainData.from_pairs(
        corpus, users, [("b", "liked")], keywords=[["graph neural networks"], ["graph neural networks"]]
    )
    ranker = ContentRanker().fit(data)
    rows = corpus.ids.indices(["tts", "gnn", "gnn2"])
    reasons = ranker.explain(0, rows)
    assert reasons[0] == "new in your window"  # only "neural" shared: no keyword claimed
    assert reasons[1] == "matches keyword graph neural networks"  # the phrase occurs
    assert reasons[2] == "matches keyword graph neural networks"  # graph(s), neural, network(s)
    assert ranker.explain_many(np.array([0, 1]), np.stack([rows, rows])) == [
        reasons,
        ranker.explain(1, rows),
    ]
    assert not ranker.explain(1, rows)[0].startswith("matches keyword")
    assert keyword_hits(["speech synthesis", "GAN"], "an organ of speech synthesis") == ["speech synthesis"]


def test_trending_never_shows_what_the_reader_saw_or_excluded(store: Store, make_config: ConfigFactory) -> None:
    """Liked, disliked, sent, excluded by keyword and outside the reader's categories: none of them
    in trending, in the daily run's and the planner's lists alike."""
    from digest.sources import PaperRecord

    now = NOW
    records = [
        PaperRecord.make(
            id=f"p{i}", title=f"Paper {i} {word}", abstract="text", upvotes=100 - i, categories=[cat], source="t"
        )
        for i, (word, cat) in enumerate(
            [
                ("liked", "cs.CL"),
                ("disliked", "cs.CL"),
                ("sent", "cs.CL"),
                ("medical", "cs.CL"),
                ("vision", "cs.CV"),
                ("fine", "cs.CL"),
                ("also fine", "cs.CL"),
            ]
        )
    ]
    store.upsert_papers(records, now)
    settings = make_config(
        """
        [[subscribers]]
        email = "r@example.org"
        categories = ["cs.CL"]
        exclude_keywords = ["medical"]
        """
    )
    ids = store.sync_subscribers(settings.subscribers, now)
    sid = ids["r@example.org"]
    store.add_interactions(sid, ["p0"], Kind.LIKE, now, origin="test")
    store.add_interactions(sid, ["p1"], Kind.DISLIKE, now, origin="test")
    store.add_interactions(sid, ["p2"], Kind.SENT, now, origin="test")
    (sub,) = store.subscribers()
    data = train_data(store, [sub])
    candidates: list[Paper] = store.papers([r.id for r in records])
    seen = store.papers_seen([sid], [p.id for p in candidates], [Kind.SENT, Kind.LIKE, Kind.DISLIKE, Kind.CLICKED])
    hidden = seen.get(sid, set())
    shown = [p.id for p, _ in trending(data, candidates, hidden, subscriber=sub)]
    assert shown == ["p5", "p6"]
    assert [p.id for p in candidates if may_show(sub, p, hidden)] == ["p5", "p6"]
    from digest.pipeline import Due

    lists = trending_lists(data, candidates, [Due(sub, now.date(), None, [], set(hidden))])
    assert [t[0] for t in lists[sid]] == ["p5", "p6"]


def test_readers_choose_categories_on_the_web(make_config: ConfigFactory) -> None:
    """Sign-up and preferences offer the configured sources' categories as checkboxes; a ticked one
    is saved on the reader (through the pending sign-up); one not offered is a 400 with a message."""
    from starlette.testclient import TestClient

    from digest import links
    from digest.web import create_app

    settings = make_config(
        """
        [web]
        base_url = "https://digest.example.org"
        [[sources]]
        kind = "arxiv"
        categories = ["cs.CV", "cs.CL"]
        """
    )
    store = Store(settings.database_url)
    try:
        with TestClient(create_app(settings, store=store), base_url="https://digest.example.org") as client:
            form = client.get("/subscribe")
            assert form.status_code == 200
            assert re.findall(r'name="categories" value="([^"]+)"', form.text) == ["cs.CV", "cs.CL"]
            csrf = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)  # type: ignore[union-attr]
            base = {"csrf": csrf, "timezone": "UTC", "send_at": "07:30", "email": "cleo@example.org"}
            bad = client.post("/subscribe", data={**base, "categories": ["cs.CL", "astro-ph"]})
            assert bad.status_code == 400 and "choose from the categories listed" in bad.text
            assert re.search(r'value="cs.CL" checked', bad.text)  # what was ticked stays ticked
            ok = client.post("/subscribe", data={**base, "categories": ["cs.CL"]})
            assert ok.status_code == 200 and "Check your inbox" in ok.text
            assert store.confirm_subscription("cleo@example.org", NOW) is not None
            cleo = store.subscriber(email="cleo@example.org")
            assert cleo is not None and cleo.active and cleo.categories == ["cs.CL"]

            url = links.manage_url(settings, links.secret_key(settings), "cleo@example.org")
            page = client.get(url)
            assert re.search(r'value="cs.CL" checked', page.text) and not re.search(r'value="cs.CV" checked', page.text)
            csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
            prefs = {"csrf": csrf, "timezone": "UTC", "send_at": "07:30", "max_papers": "5"}
            saved = client.post(url, data={**prefs, "categories": ["cs.CV", "cs.CL"]})
            assert saved.status_code == 200 and "Saved" in saved.text
            assert store.subscriber(email="cleo@example.org").categories == ["cs.CV", "cs.CL"]  # type: ignore[union-attr]
            refused = client.post(url, data={**prefs, "categories": "math.ST"})
            assert refused.status_code == 400 and "choose from the categories listed" in refused.text
            cleared = client.post(url, data=prefs)  # none ticked: every category
            assert cleared.status_code == 200 and store.subscriber(email="cleo@example.org").categories == []  # type: ignore[union-attr]
    finally:
        store.close()
