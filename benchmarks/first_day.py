"""A researcher's first day, end to end, with the real commands (issue 14's "done when").

In a fresh temporary folder, as a new user would:

1. `digest init` writes the starter config (into $XDG_CONFIG_HOME, here the temporary folder);
2. the config is edited as the starter says: an `arxiv_rss` source, a reader with two categories
   (cs.CV, cs.CL) and a `library`: a 300-entry Zotero-style BibTeX export of older papers (real
   CiteULike titles from `../shared/bench`, 1995-2012, @article/@inproceedings/@misc, no
   abstracts, mostly computer vision: 240 titles on images and video, 60 on anything else);
3. a local HTTP server answers like rss.arxiv.org for today's listings of cs.CV, cs.CL and cs.LG,
   built from the bundled sample's real papers (879 titles and abstracts) with arXiv-style ids,
   each filed under cs.CV, cs.CL or cs.LG by its words (cross-listed where it has both);
4. `digest send` delivers to the outbox (a real .eml file), and the script checks that message:
   the picks' categories, every paper link (none goes to our server: there is none), and every
   reason ("close to X": X is one of the reader's likes, from the library or the config's `liked`
   and topics' `liked`; "matches keyword K": K is in the paper's text).

    python benchmarks/first_day.py [--bench ../shared/bench] [--keep DIR] [--json]

Prints the commands' own output, then the figures.  Needs no network.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from email import message_from_bytes, policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from xml.sax.saxutils import escape

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "digest" / "data" / "sample_papers.jsonl"
NOW = "2026-12-02T07:45:00+00:00"  # a Wednesday: arXiv announces
VISION = re.compile(
    r"\b(image|images|visual|vision|video|videos|segmentation|object detection|scene|pixel|camera|3d|pose)\b", re.I
)
LANGUAGE = re.compile(
    r"\b(language|text|speech|translation|parsing|word|words|corpus|dialogue|question answering|sentiment|linguistic)\b",
    re.I,
)


def zotero_library(bench: Path, rng: random.Random) -> tuple[str, list[str]]:
    """A 300-entry BibTeX export as Zotero writes it, and its titles."""
    papers = [json.loads(line) for line in (bench / "citeulike-a-cold" / "papers.jsonl").open()]
    titled = [p for p in papers if len(p["title"]) > 20]
    vision = [p for p in titled if VISION.search(p["title"])]
    other = [p for p in titled if not VISION.search(p["title"]) and not LANGUAGE.search(p["title"])]
    chosen = rng.sample(vision, 240) + rng.sample(other, 60)
    rng.shuffle(chosen)
    entries = []
    for i, p in enumerate(chosen):
        kind = rng.choice(["article", "inproceedings", "misc"])
        venue = {"article": "journal = {IEEE TPAMI}", "inproceedings": "booktitle = {Proc. CVPR}", "misc": ""}[kind]
        title = p["title"].replace("{", "").replace("}", "").replace("&", r"\&").replace("%", r"\%")
        entries.append(
            f"@{kind}{{citeulike{i},\n\ttitle = {{{title}}},\n\tyear = {{{rng.randint(1995, 2012)}}},\n"
            + (f"\t{venue},\n" if venue else "")
            + "\tkeywords = {imported},\n}\n"
        )
    return "\n".join(entries), [p["title"] for p in chosen]


def listings() -> dict[str, list[dict]]:
    """Today's announcements by category, from the sample's papers."""
    by_cat: dict[str, list[dict]] = {"cs.CV": [], "cs.CL": [], "cs.LG": []}
    for n, line in enumerate(SAMPLE.open()):
        p = json.loads(line)
        text = p["title"] + " " + p["abstract"][:400]
        cats = [c for c, rx in (("cs.CV", VISION), ("cs.CL", LANGUAGE)) if rx.search(text)] or ["cs.LG"]
        p["aid"], p["cats"] = f"2612.{n + 1:05d}", cats
        for i, c in enumerate(cats):
            by_cat[c].append({**p, "type": "new" if i == 0 else "cross"})
    return by_cat


def rss(category: str, items: list[dict]) -> bytes:
    """An RSS 2.0 channel shaped like rss.arxiv.org/rss/<category>."""
    day = "Wed, 02 Dec 2026 00:00:00 -0500"
    body = "".join(
        f"<item><title>{escape(p['title'])}</title><link>https://arxiv.org/abs/{p['aid']}</link>"
        f"<description>arXiv:{p['aid']}v1 Announce Type: {p['type']} \nAbstract: {escape(p['abstract'])}</description>"
        f'<guid isPermaLink="false">oai:arXiv.org:{p["aid"]}v1</guid>'
        + "".join(f"<category>{c}</category>" for c in p["cats"])
        + f"<pubDate>{day}</pubDate><arxiv:announce_type>{p['type']}</arxiv:announce_type>"
        f"<dc:rights>http://creativecommons.org/licenses/by/4.0/</dc:rights>"
        f"<dc:creator>{escape(', '.join(p.get('authors') or ['A. Author']))}</dc:creator></item>"
        for p in items
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<rss xmlns:arxiv="http://arxiv.org/schemas/atom" '
        'xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:atom="http://www.w3.org/2005/Atom" version="2.0">'
        f"<channel><title>{category} updates on arXiv.org</title><link>http://rss.arxiv.org/rss/{category}</link>"
        f"<description>{category} updates on the arXiv.org e-print archive.</description>"
        f"<lastBuildDate>Wed, 02 Dec 2026 05:00:14 +0000</lastBuildDate><pubDate>{day}</pubDate>"
        f"{body}</channel></rss>"
    ).encode()


def serve(feeds: dict[str, bytes]) -> tuple[ThreadingHTTPServer, list[str]]:
    asked: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            body = feeds.get(self.path.split("?")[0])
            self.send_response(200 if body else 404)
            self.send_header("Content-Type", "application/rss+xml")
            self.end_headers()
            self.wfile.write(body or b"not found")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, asked


def run(cmd: list[str], env: dict[str, str], cwd: Path) -> str:
    shown = "$ " + " ".join(cmd)
    done = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    out = (done.stdout + done.stderr).rstrip()
    print(shown + "\n" + out + "\n", flush=True)
    if done.returncode:
        raise SystemExit(f"{shown} failed ({done.returncode})")
    return out


def edit_config(text: str, base_url: str) -> str:
    """What the starter config tells a new user to change."""
    text = text.replace('kind = "arxiv"\n', 'kind = "arxiv_rss"\n', 1)
    text = text.replace('categories = ["cs.LG", "cs.CL"]', 'categories = ["cs.CV", "cs.CL", "cs.LG"]', 1)
    text = text.replace(
        'base_url = ""\n# arxiv: papers per request', f'base_url = "{base_url}"\n# arxiv: papers per request'
    )
    text = text.replace('email = "you@example.org"', 'email = "ada@example.org"')
    text = text.replace("library = []", 'library = ["zotero.bib"]')
    text = text.replace('keywords = ["language models"]', "keywords = []")
    return text.replace("\ncategories = []\n", '\ncategories = ["cs.CV", "cs.CL"]\n')


def config_likes(config: Path, email: str) -> list[str]:
    """The titles a subscriber of `config` likes there: `liked` and each topic's `liked` (the starter's
    example topics are kept by the edits a new user makes, and their papers count as likes too)."""
    import tomllib

    for sub in tomllib.loads(config.read_text(encoding="utf-8")).get("subscribers", []):
        if sub.get("email") == email:
            return list(sub.get("liked", [])) + [t for topic in sub.get("topics", []) for t in topic.get("liked", [])]
    return []


def check(eml: Path, library: list[str], papers: dict[str, dict]) -> dict:
    msg = message_from_bytes(eml.read_bytes(), policy=policy.default)
    text = msg.get_body(("plain",)).get_content()
    body = msg.get_body(("html",)).get_content()
    hrefs = [html.unescape(h) for h in re.findall(r'href="([^"]+)"', body)]
    picks = re.findall(r"^\s*\d+\. (.+)$", text, re.M)
    reasons = re.findall(r'<span class="reason"[^>]*>([^<]+)</span>', body)
    by_title = {p["title"]: p for p in papers.values()}
    titles_lower = {t.lower() for t in library}
    true = 0
    for reason in map(html.unescape, reasons):
        close = re.match(r"close to (.+)$", reason)
        keyword = re.match(r"matches keyword (.+)$", reason)
        if close:
            true += close.group(1).rstrip(".…").lower() in titles_lower or any(
                t.startswith(close.group(1).rstrip(".…").lower()) for t in titles_lower
            )
        elif keyword:
            true += any(keyword.group(1).lower() in (p["title"] + p["abstract"]).lower() for p in papers.values())
    cats = [by_title[t]["cats"] for t in picks if t in by_title]
    return {
        "subject": str(msg["Subject"]),
        "picks": len(picks),
        "picks_in_cs_cv": sum("cs.CV" in c for c in cats),
        "picks_in_cs_cl_only": sum(c == ["cs.CL"] for c in cats),
        "picks_outside_reader_categories": sum(not ({"cs.CV", "cs.CL"} & set(c)) for c in cats),
        "links": len(hrefs),
        "links_to_arxiv_or_mailto": sum(h.startswith(("https://arxiv.org/", "mailto:")) for h in hrefs),
        "links_elsewhere": sorted({h for h in hrefs if not h.startswith(("https://arxiv.org/", "mailto:"))}),
        "reasons": len(reasons),
        "reasons_true": true,
        "titles": picks,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bench", type=Path, default=ROOT.parent / "shared" / "bench")
    ap.add_argument("--keep", type=Path, help="work in this folder (kept) instead of a temporary one")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    home = args.keep or Path(tempfile.mkdtemp(prefix="digest-first-day-"))
    if home.exists() and args.keep:
        shutil.rmtree(home)
    home.mkdir(parents=True, exist_ok=True)
    rng = random.Random(14)
    bib, library = zotero_library(args.bench, rng)
    by_cat = listings()
    feeds = {f"/rss/{c}": rss(c, items) for c, items in by_cat.items()}
    server, asked = serve(feeds)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}
    env |= {"XDG_CONFIG_HOME": str(home / "config"), "DIGEST_DATA_DIR": str(home / "data"), "COLUMNS": "120"}
    digest = [sys.executable, "-m", "digest"]
    try:
        run([*digest, "init"], env, home)
        config = home / "config" / "digest" / "digest.toml"
        (config.parent / "zotero.bib").write_text(bib, encoding="utf-8")
        config.write_text(edit_config(config.read_text(encoding="utf-8"), base), encoding="utf-8")
        run([*digest, "send", "--now", NOW], env, home)
    finally:
        server.shutdown()
    [eml] = sorted((home / "data" / "outbox").rglob("*.eml"))
    papers = {p["aid"]: p for items in by_cat.values() for p in items}
    figures = check(eml, library + config_likes(config, "ada@example.org"), papers) | {
        "feed_requests": sorted(set(asked)),
        "eml": str(eml),
    }
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        for key, value in figures.items():
            print(f"{key}: {value}")


if __name__ == "__main__":
    main()
