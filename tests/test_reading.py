"""The reading features of issue 15: a section per interest, authors you follow, the sentence that
matters (highlight), follow-ups.  On the sample corpus in a real SQLite file, mailed through a real
SMTP server (aiosmtpd), ranked by the content ranker (fast) and, once, by the default hybrid."""

from __future__ import annotations

import html
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from starlette.testclient import TestClient

from digest import links
from digest.db import Store
from digest.highlight import highlights, shorten, split_sentences
from digest.pipeline import run_daily
from digest.rank import Corpus, IdMap, TrainData
from digest.rank.authors import AuthorIndex, Followed
from digest.rank.content import ContentRanker
from digest.rank.interests import share, split_budget
from digest.resources import sample_corpus_path
from digest.settings import Settings
from digest.sources.base import PaperRecord
from digest.web import create_app
from digest.workers import plan_day, work

from .conftest import ConfigFactory, Inbox

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
SAMPLE = [json.loads(line) for line in sample_corpus_path().read_text(encoding="utf-8").splitlines() if line.strip()]
BY_TITLE = {r["title"]: r for r in SAMPLE}

# An off-topic paper (reinforcement learning) by the author Ada follows, one by a namesake with
# another first name, and one by an "initial" form of the followed name.
FOLLOWED_PAPER = "SINDy-RL: Interpretable and Efficient Model-Based Reinforcement Learning"
NAMESAKE_PAPER = "CRINN: Contrastive Reinforcement Learning for Approximate Nearest Neighbor Search"
AUTHORS = {FOLLOWED_PAPER: ["Ignasi Clavera", "Yóshua Bengio"], NAMESAKE_PAPER: ["Lili Chen", "Samy Bengio"]}
HOSTILE = {
    "id": "t-hostile-0001",
    "title": "Segmentation masks <b>bold</b> & friends",
    "abstract": "We study things, e.g. masks. Our semantic segmentation model & decoder reaches 41.5 mIoU "
    "(p < 0.05), as Smith et al. suggested for semantic segmentation. Nothing else matters here.",
}


def _papers(folder: Path) -> Path:
    path = folder / "papers.jsonl"
    lines = []
    for rec in [*SAMPLE, HOSTILE]:
        rec = dict(rec, published=(NOW - timedelta(hours=6)).isoformat())
        if rec["title"] in AUTHORS:
            rec["authors"] = AUTHORS[rec["title"]]
        lines.append(json.dumps(rec))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


ADA = """
[[subscribers]]
email = "ada@example.org"
name = "Ada"
max_papers = 8
authors = ["Yoshua Bengio"]

[[subscribers.topics]]
name = "Segmentation"
keywords = ["semantic segmentation", "instance segmentation"]
liked = ["Open-vocabulary Semantic Segmentation with Frozen Vision-Language Models"]

[[subscribers.topics]]
name = "Language models"
keywords = ["large language models"]
liked = ["Linearizing Large Language Models", "Backpack Language Models"]
"""

BEN = """
[[subscribers]]
email = "ben@example.org"
max_papers = 5
keywords = ["semantic segmentation"]
"""


def _config(
    make_config: ConfigFactory,
    folder: Path,
    port: int,
    *,
    ranker: str = "content",
    body: str = ADA + BEN,
    name: str = "digest.toml",
) -> Settings:
    return make_config(
        f"""
        [ranking]
        ranker = "{ranker}"

        [[sources]]
        kind = "jsonl"
        path = "{_papers(folder).as_posix()}"
        """
        + body,
        smtp_port=port,
        method="smtp",
        name=name,
    )


def _rows(settings: Settings) -> dict[str, object]:
    store = Store(settings.database_url)
    try:
        ids = {s.id: s.email for s in store.subscribers()}
        return {ids[d.subscriber_id]: d for d in store.deliveries()}
    finally:
        store.close()


def _titles(store: Store, ids: list[str]) -> list[str]:
    return [p.title for p in store.papers(ids)]


# -- the pieces ---------------------------------------------------------------------------------


def test_sentences_keep_abbreviations_initials_and_decimals_together() -> None:
    text = (
        "We follow Smith et al. in most respects. Methods, e.g. dropout, help. "
        "Accuracy rose to 93.5% (Fig. 2). Y. Bengio agrees! Does it scale? Yes."
    )
    assert split_sentences(text) == [
        "We follow Smith et al. in most respects.",
        "Methods, e.g. dropout, help.",
        "Accuracy rose to 93.5% (Fig. 2).",
        "Y. Bengio agrees!",
        "Does it scale?",
        "Yes.",
    ]
    long = "word " * 100
    cut = shorten(long.strip(), 50)
    assert cut.endswith(" …") and all(w == "word" for w in cut[:-2].split())


def test_followed_names_match_normalised_and_never_a_namesake() -> None:
    followed = Followed.of(["Yoshua Bengio", "Laurens van der Maaten"])
    assert followed.match(["Y. Bengio"]) == "Y. Bengio"
    assert followed.match(["BENGIO, Yóshua"]) == "BENGIO, Yóshua"
    assert followed.match(["Yoshua B. Bengio"]) == "Yoshua B. Bengio"
    assert followed.match(["L. van der Maaten"]) == "L. van der Maaten"
    assert followed.match(["Samy Bengio"]) == ""  # a namesake with another first name
    assert followed.match(["Yoshua Bengioo"]) == ""
    # an initial that two followed names fit is nobody's
    two = Followed.of(["Yoshua Bengio", "Yves Bengio"])
    assert two.match(["Y. Bengio"]) == "" and two.match(["Yves Bengio"]) == "Yves Bengio"
    assert Followed.of(["0000-0002-1825-0097"]).match(["Ada Lovelace (0000-0002-1825-0097)"]) == "Ada Lovelace"
    index = AuthorIndex([["Samy Bengio"], ["A. B", "Y. Bengio"], ["Yoshua Bengio"]])
    assert index.papers_by(followed) == {1: "Y. Bengio", 2: "Yoshua Bengio"}
    assert index.papers_by(two) == {2: "Yoshua Bengio"}  # "Y. Bengio" fits both: nobody


def test_budget_is_shared_by_what_each_interest_offers_and_no_paper_twice() -> None:
    assert split_budget([50, 50], 10) == [5, 5]
    assert split_budget([50, 3], 10) == [8, 2]  # 10 : 3 (an offer counts up to the budget)
    assert split_budget([1, 0, 40], 10) == [1, 0, 9]
    assert split_budget([2, 1], 10) == [2, 1]  # a thin day: fewer picks
    assert split_budget([9, 9, 9], 2) == [1, 1, 0]
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(3, 40))
    scores[1, :20] = -np.inf
    scores[:, 0] = 5.0  # the best paper of every interest: one section gets it
    picked = share(scores, 10)
    flat = [int(c) for p in picked for c in p]
    assert len(flat) == len(set(flat)) == 10 and flat.count(0) == 1
    assert all(np.isfinite(scores[i, p]).all() for i, p in enumerate(picked))


def test_the_sentence_differs_between_two_readers_for_the_same_paper() -> None:
    """On the sample corpus: X-LoRA's abstract is about language models and protein mechanics; a
    reader of each gets the sentence of their own interest."""
    corpus = Corpus.from_records((r["id"], r["title"], r["abstract"]) for r in SAMPLE)
    data = TrainData.from_pairs(
        corpus, IdMap(["nlp", "bio"]), [], keywords=[["large language models reasoning"], ["protein mechanics"]]
    )
    ranker = ContentRanker(profile_terms=200).fit(data)
    paper = next(r for r in SAMPLE if r["title"].startswith("X-LoRA"))
    nlp, bio = highlights(
        ranker.text_space(), [(0, paper["id"], paper["abstract"]), (1, paper["id"], paper["abstract"])]
    )
    assert nlp and bio and nlp != bio
    assert nlp in split_sentences(paper["abstract"]) and bio in split_sentences(paper["abstract"])
    assert "protein" in bio.lower() and "language model" in nlp.lower()


# -- a digest with sections, a followed author, highlights --------------------------------------


def test_two_interests_a_followed_author_and_highlights_in_email_and_web(
    tmp_path: Path, make_config: ConfigFactory, smtp_server: tuple[Inbox, int]
) -> None:
    inbox, port = smtp_server
    settings = _config(make_config, tmp_path, port)
    report = run_daily(NOW, settings, force=True)
    assert report.by_status()["sent"] == 2, [(o.email, o.status, o.detail) for o in report.outcomes]
    rows = _rows(settings)
    ada, ben = rows["ada@example.org"], rows["ben@example.org"]
    store = Store(settings.database_url)
    try:
        titles = _titles(store, ada.papers)
        # the followed author's off-topic paper leads; the namesake's is nowhere
        assert titles[0] == FOLLOWED_PAPER and "an author you follow" in ada.reasons[0]
        assert NAMESAKE_PAPER not in titles
        names = [name for name, _ in ada.sections]
        assert names[0] == "From authors you follow" and {"Segmentation", "Language models"} <= set(names)
        assert sum(n for _, n in ada.sections) == len(ada.papers) == 8  # the budget, all of it
        assert len(set(ada.papers)) == len(ada.papers)
        counts = dict((name, n) for name, n in ada.sections)
        assert counts["Segmentation"] >= 2 and counts["Language models"] >= 2
        segment = [t for t, s in zip(titles, _section_names(ada.sections)) if s == "Segmentation"]
        assert all(re.search(r"segment", t, re.I) or t for t in segment)
        assert len(ada.highlights) == 8 and sum(bool(h) for h in ada.highlights) >= 6
        # one interest: no sections, today's single list
        assert ben.sections == [] and len(ben.papers) == 5 and len(ben.highlights) == 5
        # the hostile paper's highlight: a whole sentence, escaped in the HTML, the same everywhere
        hostile = ben.papers.index(HOSTILE["id"])
        sentence = ben.highlights[hostile]
        (stored,) = store.papers([HOSTILE["id"]])
        assert sentence in split_sentences(stored.abstract) and "p < 0.05" in sentence and "&" in sentence
        assert sentence.startswith("Our semantic") and "Smith et al. suggested" in sentence
        (mail,) = inbox.to("ben@example.org")
        body_html = mail.get_body(("html",)).get_content()
        body_text = mail.get_body(("plain",)).get_content()
        assert html.escape(sentence, quote=False) in body_html and "p < 0.05" not in body_html
        assert " ".join(sentence.split()) in " ".join(body_text.replace("»", " ").split())
        (ada_mail,) = inbox.to("ada@example.org")
        ada_html = ada_mail.get_body(("html",)).get_content()
        for name in ("From authors you follow", "Segmentation", "Language models"):
            assert f">{name}</td>" in ada_html
        # the web digest page shows the same rows: sections, highlights
        key = links.secret_key(settings)
        client = TestClient(create_app(settings, clock=lambda: NOW.timestamp()))
        for who, row in (("ben@example.org", ben), ("ada@example.org", ada)):
            page = client.get(links.manage_url(settings, key, who, clock=lambda: NOW.timestamp(), path="/digest"))
            assert page.status_code == 200
            for h in row.highlights:
                assert html.escape(h, quote=False) in page.text
            for name, _ in row.sections:
                assert f">{name}</td>" in page.text
    finally:
        store.close()


def _section_names(sections: list) -> list[str]:
    return [str(name) for name, n in sections for _ in range(int(n))]


def test_follow_up_line_once(tmp_path: Path, make_config: ConfigFactory, smtp_server: tuple[Inbox, int]) -> None:
    inbox, port = smtp_server
    liked = "Linearizing Large Language Models"
    settings = _config(
        make_config, tmp_path, port, body=f'[[subscribers]]\nemail = "cy@example.org"\nliked = ["{liked}"]\n'
    )
    run_daily(NOW, settings, force=True)
    store = Store(settings.database_url)
    try:
        rec = BY_TITLE[liked]
        first = dict(id=rec["id"], title=rec["title"], abstract=rec["abstract"], version=2)
        store.upsert_papers([PaperRecord.make(**first)], NOW + timedelta(hours=1))  # v2 -> its first known version
        (paper,) = store.papers([rec["id"]])
        assert paper.revised_at is None  # the first version we know of is no revision
        later = NOW + timedelta(days=1)
        update = dict(first, version=3, journal_ref="NeurIPS 2026")
        store.upsert_papers([PaperRecord.make(**update)], later - timedelta(hours=2))
        run_daily(later, settings, force=True)
        run_daily(later + timedelta(days=1), settings, force=True)
    finally:
        store.close()
    notes = [d.notes for d in sorted(_rows_all(settings), key=lambda d: d.digest_date)]
    line = f"A paper you liked was updated: {liked} v3, now in NeurIPS 2026"
    assert notes == [[], [line], []]
    mails = inbox.to("cy@example.org")
    assert len(mails) == 3
    said = [line in " ".join(m.get_body(("plain",)).get_content().split()) for m in mails]
    assert said == [False, True, False]
    assert html.escape(line, quote=False) in mails[1].get_body(("html",)).get_content()


def _rows_all(settings: Settings) -> list:
    store = Store(settings.database_url)
    try:
        return store.deliveries()
    finally:
        store.close()


@pytest.mark.parametrize("ranker", ["hybrid"])
def test_both_daily_modes_store_the_same_sections_highlights_and_notes(
    tmp_path: Path, make_config: ConfigFactory, smtp_server: tuple[Inbox, int], ranker: str
) -> None:
    """`digest send` and `digest worker --plan` + `digest worker` go through one planner: on two
    copies of one day, the rows (papers, sections, highlights) are the same; the hybrid folds the
    interests in without a refit (the second mode starts from the first one's saved fit, as a
    day after the weekly fit does)."""
    import shutil

    inbox, port = smtp_server
    rows = []
    for mode in ("send", "workers"):
        folder = tmp_path / mode
        folder.mkdir()
        if mode == "workers":
            shutil.copytree(tmp_path / "send" / "data" / "models", folder / "data" / "models")
        settings = _config(make_config, folder, port, ranker=ranker, name=f"{mode}.toml")
        settings = settings.model_copy(update={"data_dir": str(folder / "data")})
        if mode == "send":
            run_daily(NOW, settings, force=True)
        else:
            store = Store(settings.database_url)
            try:
                assert plan_day(store, settings, NOW, force=True).planned == 2
                assert work(store, settings, NOW).sent == 2
            finally:
                store.close()
        rows.append({e: (d.papers, d.sections, d.highlights, d.notes) for e, d in _rows(settings).items()})
    assert rows[0] == rows[1]
    ada = rows[0]["ada@example.org"]
    assert ada[1][0][0] == "From authors you follow" and len(ada[1]) >= 3
    assert len(inbox.messages) == 4


def test_the_web_digest_page_shows_the_sections_in_chromium(
    tmp_path: Path, make_config: ConfigFactory, smtp_server: tuple[Inbox, int]
) -> None:
    """The digest page (as "View in your browser" opens it) in real headless Chromium: the
    followed-authors section on top, then one heading per interest, each over its papers, with
    the highlighted sentences under the titles."""
    import threading
    import time

    import uvicorn

    from .conftest import free_port
    from .test_browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS

    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is missing")
    _, port = smtp_server
    settings = _config(make_config, tmp_path, port, body=ADA)
    run_daily(NOW, settings, force=True)
    (row,) = _rows(settings).values()
    web_port = free_port()
    clock = lambda: NOW.timestamp()  # noqa: E731
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings, clock=clock), host="127.0.0.1", port=web_port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    url = links.manage_url(settings, links.secret_key(settings), "ada@example.org", clock=clock, path="/digest")
    url = re.sub(r"^https?://[^/]+", f"http://127.0.0.1:{web_port}", url)
    try:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 720, "height": 900})
                page.set_default_timeout(10_000)
                page.goto(url)
                headings = [h.strip() for h in page.locator("td.section").all_inner_texts()]
                shown = [h.strip() for h in page.locator("div.highlight").all_inner_texts()]
                ARTIFACTS.mkdir(exist_ok=True)
                page.screenshot(path=str(ARTIFACTS / "digest-sections.png"), full_page=True)
            finally:
                browser.close()
    finally:
        server.should_exit = True
        thread.join(5)
    names = [str(name) for name, _ in row.sections]
    assert [h.casefold() for h in headings[: len(names)]] == [n.casefold() for n in names]
    assert names[0] == "From authors you follow" and {"Segmentation", "Language models"} <= set(names)
    assert shown == [h for h in row.highlights if h]


def test_web_preferences_take_topics_and_authors(make_config: ConfigFactory) -> None:
    """A topic a line ("name: keyword, keyword") and an author a line on the preferences page;
    a bad line is a 400 naming the field, never a 500; the next digest has the sections."""
    from .test_web import _web_subscriber, csrf_of, make_world

    for world in make_world(make_config):
        url = _web_subscriber(world, "pia@example.org")
        page = world.client.get(url)
        assert page.status_code == 200 and 'name="topics"' in page.text and 'name="authors"' in page.text
        base = {"csrf": csrf_of(page), "timezone": "UTC", "send_at": "07:30", "max_papers": "6"}
        bad = world.client.post(url, data={**base, "topics": "just words"})
        assert bad.status_code == 400 and "name: keyword, keyword" in bad.text
        bad = world.client.post(url, data={**base, "authors": "Bengio"})
        assert bad.status_code == 400 and "not a full name" in bad.text
        bad = world.client.post(url, data={**base, "topics": "A: x\na: y"})
        assert bad.status_code == 400 and "own name" in bad.text
        topics = "Segmentation: semantic segmentation, instance segmentation\nLanguage: large language models"
        saved = world.client.post(url, data={**base, "topics": topics, "authors": "Yoshua Bengio\n0000-0002-1825-0097"})
        assert saved.status_code == 200 and "Saved" in saved.text
        assert "Segmentation: semantic segmentation, instance segmentation" in saved.text
        pia = world.store.subscriber(email="pia@example.org")
        assert [t["name"] for t in pia.topics] == ["Segmentation", "Language"]
        assert pia.topics[0]["keywords"] == ["semantic segmentation", "instance segmentation"]
        assert pia.authors == ["Yoshua Bengio", "0000-0002-1825-0097"]
        world.clock.advance(days=1)
        world.run()
        row = world.store.last_delivery(pia.id)
        assert row is not None and [n for n, _ in row.sections] == ["Segmentation", "Language"]
        assert sum(n for _, n in row.sections) == len(row.papers) == 6


def test_interests_are_found_by_clustering_the_likes_and_named_by_their_terms() -> None:
    """Six graph papers and six speech papers liked: two interests, named by their terms; twelve
    language-model papers: one interest (no sections).  In an LSA space of the sample corpus's
    TF-IDF, as the hybrid has."""
    from sklearn.decomposition import TruncatedSVD

    from digest.rank.interests import found_interests

    corpus = Corpus.from_records((r["id"], r["title"], r["abstract"]) for r in SAMPLE)

    def titled(word: str, n: int) -> list[str]:
        return [r["id"] for r in SAMPLE if word in r["title"].lower()][:n]

    two = titled("graph", 6) + titled("speech", 6)
    one = titled("language model", 12)
    data = TrainData.from_pairs(corpus, IdMap(["two", "one"]), [("two", p) for p in two] + [("one", p) for p in one])
    space = ContentRanker(profile_terms=200).fit(data).text_space()
    space.dense = TruncatedSVD(100, random_state=0, n_iter=3).fit_transform(space.items)
    found = found_interests(space, data.likes[0].indices)
    assert len(found) == 2, [(i.name, len(i.liked)) for i in found]
    groups = [{corpus.ids.ids[r] for r in i.liked} for i in found]
    assert {frozenset(g) for g in groups} == {frozenset(titled("graph", 6)), frozenset(titled("speech", 6))}
    assert any("graph" in i.name for i in found) and any("speech" in i.name for i in found)
    assert found_interests(space, data.likes[1].indices) == []


def test_interests_fold_into_a_hybrid_fit_with_embeddings_leaving_readers_as_they_were() -> None:
    """The day's fit (with embeddings) takes a reader's interests in as rows of their own: the
    readers' own scores do not move, and the interests count in no reader's like count."""
    from digest.rank.hybrid import HybridRanker
    from digest.rank.interests import Interest, fold_in_interests, with_interests

    records = SAMPLE[:300]
    corpus = Corpus.from_records((r["id"], r["title"], r["abstract"]) for r in records)
    likes = [("a", r["id"]) for r in records[:12]] + [("b", r["id"]) for r in records[10:14]]
    data = TrainData.from_pairs(corpus, IdMap(["a", "b"]), likes)
    embeddings = np.random.default_rng(0).normal(size=(len(corpus), 16)).astype(np.float32)
    ranker = HybridRanker(embeddings=embeddings, factors=8, iterations=2, lsa_dims=16).fit(data)
    candidates = np.arange(len(corpus))
    before = ranker.score(np.array([0, 1]), candidates)
    augmented, rows = with_interests(
        data, [0], [[Interest("x", [], np.arange(0, 6)), Interest("y", ["graph"], np.arange(6, 12))]]
    )
    fold_in_interests(ranker, augmented)
    assert rows == [[2, 3]] and augmented.readers == 2
    np.testing.assert_allclose(ranker.score(np.array([0, 1]), candidates), before, rtol=1e-5, atol=1e-5)
    x, y = ranker.score(np.array(rows[0]), candidates)
    assert x[:6].mean() > x[6:12].mean() and y[6:12].mean() > y[:6].mean()  # each ranks its own papers up
    trend = ranker.state.parts["trend"]
    assert int(trend.like_counts[0]) == 1  # liked by reader a only, not by a's interest too
