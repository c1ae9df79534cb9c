"""The command line as a user meets it: the demo from any folder, one-line errors for bad input."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from digest.cli import app


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "digest", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def _one_reader_config(tmp_path: Path) -> Path:
    """A config with the sample papers, an outbox and one reader who follows graph neural networks."""
    config = tmp_path / "digest.toml"
    config.write_text(
        f'data_dir = "{(tmp_path / "d").as_posix()}"\n[delivery]\nmethod = "outbox"\n[[sources]]\nkind = "sample"\n'
        '[[subscribers]]\nemail = "a@example.org"\nkeywords = ["graph neural networks"]\nsend_at = "00:00"\n'
    )
    return config


def test_demo_runs_from_any_folder(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = run_cli("demo", "--data-dir", str(tmp_path / "demo"), "--now", "2026-11-23T09:00:00+00:00", cwd=elsewhere)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "source sample: 879 new" in out
    assert "ada@example.org: sent (2026-11-23)" in out
    assert "HTML digest:" in out
    html = tmp_path / "demo" / "digests" / "2026-11-23" / "ada@example.org.html"
    assert html.is_file()
    page = html.read_text()
    assert ">Segmentation</td>" in page and ">Vision transformers</td>" in page  # the example reader's two interests
    assert list((tmp_path / "demo" / "outbox" / "2026-11-23").glob("*.eml"))
    assert "close to" in out or "matches keyword" in out
    # Running the demo again starts fresh and shows the picks again.
    again = run_cli("demo", "--data-dir", str(tmp_path / "demo"), "--now", "2026-11-23T09:00:00+00:00", cwd=elsewhere)
    assert again.returncode == 0 and "ada@example.org: sent" in again.stdout


def test_bad_config_is_one_line_without_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[[subscribers]]\nemail = "a@example.org"\ntimezone = "Nowhere/City"\n')
    result = run_cli("send", "--config", str(bad), cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == [
        f"config: {bad}",
        f"error: {bad}: subscribers[0].timezone: unknown time zone 'Nowhere/City' (use an IANA name such as Europe/Berlin)",
    ]


def test_bad_now_is_a_clear_error(tmp_path: Path) -> None:
    result = run_cli("send", "--config", str(_one_reader_config(tmp_path)), "--now", "yesterday", cwd=tmp_path)
    assert (
        result.returncode == 2 and "is not an ISO 8601 date-time" in result.stderr and "Traceback" not in result.stderr
    )


def test_send_dry_run_and_check_config(tmp_path: Path) -> None:
    config = _one_reader_config(tmp_path)
    runner = CliRunner()
    checked = runner.invoke(app, ["check-config", "--config", str(config)])
    assert checked.exit_code == 0 and "subscribers: 1" in checked.output
    result = runner.invoke(app, ["send", "--config", str(config), "--dry-run", "--now", "2026-11-23T09:00:00+00:00"])
    assert result.exit_code == 0, result.output
    assert "a@example.org: dry-run (2026-11-23)" in result.output
    assert "summary: 1 dry-run" in result.output
    assert not (tmp_path / "d" / "outbox").exists()
    assert "not saved: a dry run" in result.output and not (tmp_path / "d" / "models").exists()  # no fit written either


def test_help_on_every_command() -> None:
    runner = CliRunner()
    for command in ("demo", "send", "run", "status", "retry", "check-config", "import-listing", "fit"):
        result = runner.invoke(app, [command, "--help"])
        assert result.exit_code == 0 and "--help" in result.output, command


def test_fit_saves_the_ranker_and_the_next_run_folds_in(tmp_path: Path) -> None:
    config = _one_reader_config(tmp_path)
    runner = CliRunner()
    first = runner.invoke(app, ["send", "--config", str(config), "--now", "2026-11-23T09:00:00+00:00"])
    assert first.exit_code == 0, first.output
    assert "ranker fitted in" in first.output and "(no saved fit)" in first.output
    refit = runner.invoke(app, ["fit", "--config", str(config), "--now", "2026-11-23T10:00:00+00:00"])
    assert refit.exit_code == 0, refit.output
    assert "(asked to refit) on 879 papers, 1 readers" in refit.output
    assert (tmp_path / "d" / "models" / "hybrid.pkl").is_file() and "saved to" in refit.output
    nxt = runner.invoke(app, ["send", "--config", str(config), "--now", "2026-11-24T09:00:00+00:00"])
    assert nxt.exit_code == 0, nxt.output
    assert "ranker of 2026-11-23 10:00 UTC updated in" in nxt.output, nxt.output
    assert "a@example.org: sent (2026-11-24)" in nxt.output


def test_a_config_that_would_break_the_run_stops_before_anything_is_written(tmp_path: Path) -> None:
    """A bad subject template or ranker used to pass check-config, ingest into the database, then crash."""
    config = _one_reader_config(tmp_path)
    config.write_text(
        config.read_text().replace('method = "outbox"\n', 'method = "outbox"\nsubject = "Hi {name}"\n')
        + '[ranking]\nranker = "nonsense"\n'
    )
    for command in ("check-config", "send", "ingest"):
        result = run_cli(command, "--config", str(config), cwd=tmp_path)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert lines == [
            f"config: {config}",
            f"error: {config}: delivery.subject: unknown placeholder {{name}}; use {{date}}, {{count}}",
            f"error: {config}: ranking.ranker: Input should be 'hybrid', 'content', 'collaborative', "
            "'trending', 'popularity', 'random' or 'svm'",
        ], lines
    assert not (tmp_path / "d").exists()  # no database, no folder: nothing was written
