"""`digest eval` and the benchmark loader on a tiny folder (empty title, a user and a paper only in test)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from digest.cli import app
from digest.errors import DataError
from digest.evaluate import evaluate, load_bench, run_eval
from digest.rank import make_ranker

TINY = Path(__file__).parent / "data" / "bench_tiny"
METHODS = "popularity,random,content,svm,collaborative,hybrid"


def test_load_bench_tiny() -> None:
    bench = load_bench(TINY)
    assert bench.candidates is None
    assert "frank" in bench.data.users  # only in test
    assert "zz-only-in-test" in bench.data.corpus.ids  # paper only in test: added untitled
    assert bench.data.corpus.titles[bench.data.corpus.ids.index("e0")] == ""
    assert bench.data.likes[bench.data.users.index("frank")].nnz == 0
    assert len(bench.eval_users) == 6


def test_candidates_and_errors(tmp_path: Path) -> None:
    folder = tmp_path / "b"
    shutil.copytree(TINY, folder)
    (folder / "candidates.txt").write_text("a3\na4\na5\nb3\nb4\nb5\nnew-paper\n")
    bench = load_bench(folder)
    assert len(bench.candidates) == 7
    res = evaluate(make_ranker("content"), bench, [1, 3])
    assert 0.0 <= res["recall@3"] <= 1.0 and res["users"] == 6
    (folder / "train.csv").write_text("user,paper\nalice,a0\nbroken line without comma\n")
    with pytest.raises(DataError, match=r"train\.csv:3"):
        load_bench(folder)
    (folder / "train.csv").write_text("user,paper\nalice,a0\n")
    (folder / "papers.jsonl").write_text('{"id": "a0", "title": "x"}\n{not json\n')
    with pytest.raises(DataError, match=r"papers\.jsonl:2"):
        load_bench(folder)
    (folder / "papers.jsonl").unlink()
    with pytest.raises(DataError, match="papers.jsonl"):
        load_bench(folder)


def test_run_eval_shape_and_sense() -> None:
    res = run_eval(TINY, [1, 2, 5], METHODS.split(","))
    assert res["users"] == 6
    assert set(res["methods"]) == set(METHODS.split(","))
    for r in res["methods"].values():
        assert {"recall@1", "recall@2", "recall@5", "ndcg@10", "seconds", "users"} <= set(r)
        assert all(0.0 <= r[k] <= 1.0 for k in ("recall@1", "recall@5", "ndcg@10"))
    assert res["methods"]["content"]["recall@5"] > res["methods"]["random"]["recall@5"] - 1e-9


def test_cli_eval_json() -> None:
    result = CliRunner().invoke(
        app, ["eval", str(TINY), "--k", "1,5", "--methods", "popularity,content,hybrid", "--json"]
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["users"] == 6
    assert set(out["methods"]) == {"popularity", "content", "hybrid"}
    assert set(out["methods"]["content"]) >= {"recall@1", "recall@5", "ndcg@10", "seconds", "users"}


def test_cli_eval_table_and_errors() -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["eval", str(TINY), "--k", "5", "--methods", "random,content"])
    assert result.exit_code == 0, result.output
    assert "r@5" in result.stdout and "content" in result.stdout
    bad = runner.invoke(app, ["eval", str(TINY), "--methods", "nope"])
    assert bad.exit_code != 0


def test_cli_eval_table_fits_80_columns_when_piped() -> None:
    # regression: rich cut the headers to "recal…" in a pipe (80 columns) with five cut-offs
    result = CliRunner().invoke(
        app, ["eval", str(TINY), "--methods", "collaborative,hybrid", "--svm-users", "0"], env={"COLUMNS": "80"}
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert "…" not in result.stdout and max(len(line) for line in lines) <= 80
    assert all(f"r@{k}" in result.stdout for k in (10, 20, 50, 100, 300)) and "collaborative" in result.stdout
    assert "minilm embeddings" in result.stdout  # the default: the built-in model


def test_plot_tells_coinciding_curves_apart_and_lists_the_anchors(tmp_path: Path) -> None:
    from digest.evaluate import plot_labels, plot_recall

    flat = {"recall@100": 0.03, "recall@300": 0.08, "ndcg@10": 0.0, "users": 5, "seconds": 0.1}
    result = {
        "bench": "citeulike-a-cold",
        "users": 5,
        "methods": {"random": flat, "popularity": {**flat, "recall@100": 0.031}, "hybrid": {**flat, "recall@100": 0.7}},
    }
    curves, anchors = plot_labels(result, [100, 300])
    assert [label for _, label, _ in curves] == ["random", "popularity (= random)", "hybrid"]
    assert "shared_rep (abstracts): 0.671 @100" in anchors
    pytest.importorskip("matplotlib")
    assert plot_recall(result, tmp_path / "p.png", [100, 300]).stat().st_size > 1000


def test_cli_eval_plot(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    png = tmp_path / "r.png"
    result = CliRunner().invoke(
        app, ["eval", str(TINY), "--k", "1,5", "--methods", "random,content", "--plot", str(png)]
    )
    assert result.exit_code == 0, result.output
    assert png.stat().st_size > 1000


def test_scores_are_deterministic() -> None:
    bench = load_bench(TINY)
    a = make_ranker("hybrid").fit(bench.data).score(np.arange(3), np.arange(5))
    b = make_ranker("hybrid").fit(bench.data).score(np.arange(3), np.arange(5))
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
