"""The saved-listing importer on the real seed pages, and on awkward pages of our own."""

from __future__ import annotations

import json
from datetime import UTC
from pathlib import Path

import pytest

from digest.resources import sample_corpus_path
from digest.sources.files import read_jsonl
from digest.sources.listing import parse_listing, read_listings

from .conftest import SHARED

SEEDS = SHARED / "seeds"
needs_seeds = pytest.mark.skipif(not SEEDS.is_dir(), reason="../shared/seeds is not beside the checkout")
FURNITURE = ("Subscribe", "Get trending papers", "byAK", "email inbox")


@needs_seeds
def test_seed_pages_parse_into_unique_papers() -> None:
    result = read_listings(sorted(SEEDS.glob("*.txt")), source="sample")
    # 1,004 title/abstract pairs on the five pages, 125 of them repeats of another page's paper.
    assert len(result.records) == 879
    assert result.skipped["duplicate merged"] == 125
    ids = [r.id for r in result.records]
    assert len(set(ids)) == len(ids)
    for rec in result.records:
        assert not any(f.lower() in rec.title.lower() for f in FURNITURE), rec.title
        assert len(rec.abstract) > 2 * len(rec.title)
    titles = {r.title for r in result.records}
    assert "Fundamental limits of overparametrized shallow neural networks for supervised learning" in titles
    assert "Dual PatchNorm" in titles  # was glued to "Subscribe" on its page
    assert "F-LMM: Grounding Frozen Large Multimodal Models" in titles  # after a date line


@needs_seeds
def test_bundled_sample_is_what_the_importer_makes() -> None:
    """The shipped sample corpus is reproducible: `digest import-listing ../shared/seeds -o ...`."""
    rebuilt = read_listings(sorted(SEEDS.glob("*.txt")), source="sample").records
    bundled = read_jsonl(sample_corpus_path(), source="sample")
    assert not bundled.skipped
    assert [(r.id, r.title, r.abstract) for r in bundled.records] == [(r.id, r.title, r.abstract) for r in rebuilt]


def test_ids_are_stable_and_duplicates_merge_to_the_longest_abstract() -> None:
    page_one = (
        "Subscribe\nA Paper About Graphs\n" + "Short abstract about graphs and their many uses in learning. " * 3 + "\n"
    )
    page_two = (
        "new\nMar 14\nA paper about graphs\n"
        + "A longer abstract about graphs and their many uses in learning and beyond. " * 4
        + "\n"
    )
    one, two = parse_listing(page_one), parse_listing(page_two)
    assert one.records[0].id == two.records[0].id  # case and spacing do not change the id
    tmp = [one.records[0], two.records[0]]
    from digest.sources.listing import merge_duplicates

    merged, count = merge_duplicates(tmp)
    assert count == 1 and merged[0].abstract.startswith("A longer abstract")


def test_a_title_without_abstract_is_kept_and_markup_is_stripped() -> None:
    text = "<b>Bold Title</b> <script>alert(1)</script>\nAnother Title\n" + "x " * 200
    result = parse_listing(text)
    assert [r.title for r in result.records] == ["Bold Title", "Another Title"]
    assert result.records[0].abstract == ""


def test_import_listing_command(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from digest.cli import app

    page = tmp_path / "page.txt"
    page.write_text("Subscribe\nFirst Paper\n" + "words " * 50 + "\nSecond Paper\n" + "other " * 50 + "\n")
    out = tmp_path / "papers.jsonl"
    result = CliRunner().invoke(app, ["import-listing", str(page), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "2 papers from 1 page(s)" in result.output
    assert [json.loads(line)["title"] for line in out.read_text().splitlines()] == ["First Paper", "Second Paper"]


def test_a_file_that_is_not_a_listing_page_is_refused_not_ingested(tmp_path: Path) -> None:
    import os

    from digest.errors import DataError

    junk = tmp_path / "random.txt"
    junk.write_bytes(os.urandom(100_000))
    with pytest.raises(DataError, match="random.txt: binary data, not a saved listing page; nothing was read"):
        read_listings([junk])
    prose = tmp_path / "notes.txt"  # text, but no title line followed by an abstract line
    prose.write_text("shopping list\n" + "\n".join(f"item{i}={'x' * 200}" for i in range(50)) + "\n")
    with pytest.raises(DataError, match="notes.txt: no paper on it"):
        read_listings([prose])
    good = tmp_path / "page.txt"
    good.write_text("Subscribe\nFirst Paper\n" + "words of an abstract " * 20 + "\n")
    result = read_listings([junk, good, prose])  # a folder with one good page: that page is read
    assert [r.title for r in result.records] == ["First Paper"]
    assert result.skipped["not a listing page"] == 2 and result.examples["not a listing page"] == [
        "random.txt",
        "notes.txt",
    ]
    assert any("random.txt: binary data" in n for n in result.notes)


def test_a_junk_listing_source_fails_alone_and_the_run_goes_on(tmp_path: Path) -> None:
    import os
    from datetime import datetime

    from digest.db import Store
    from digest.pipeline import ingest
    from digest.settings import load_settings

    (tmp_path / "junk.txt").write_bytes(os.urandom(100_000))
    config = tmp_path / "digest.toml"
    config.write_text(
        f'data_dir = "{(tmp_path / "d").as_posix()}"\n[[sources]]\nkind = "listing"\npath = "junk.txt"\n'
        '[[sources]]\nkind = "sample"\n'
    )
    settings = load_settings(config)
    store = Store(settings.database_url)
    try:
        reports = ingest(store, settings, datetime(2026, 11, 23, tzinfo=UTC))
        assert "not a saved listing page" in reports[0].error and reports[0].counts.new == 0
        assert reports[1].counts.new == 879 and store.paper_count() == 879
    finally:
        store.close()
