"""The right config, or a clear word: commands say which config they use, never quietly take the
bundled example, and `digest init` writes a commented starter into the user config folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from digest.settings import example_config_path, load_settings, settings_fields, starter_config


def run_cli(*args: str, cwd: Path, home: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """`python -m digest` as a new user on a fresh machine: HOME and the XDG folders in a temp folder."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("DIGEST_", "XDG_"))}
    environ |= {"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"), "COLUMNS": "200"}
    environ |= {"XDG_DATA_HOME": str(home / ".local" / "share")} | env
    return subprocess.run(
        [sys.executable, "-m", "digest", *args], cwd=cwd, env=environ, capture_output=True, text=True, timeout=300
    )


def test_no_config_is_one_clear_error_not_the_demo(tmp_path: Path) -> None:
    """A cron job from $HOME used to send the bundled example's demo reader a digest."""
    for command in ("send", "check-config", "status", "ingest"):
        result = run_cli(command, cwd=tmp_path, home=tmp_path)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        [line] = [x for x in result.stderr.splitlines() if x.strip()]
        assert line.startswith("error: no config file: none at ") and "run `digest init`" in line, line
        assert "--config FILE" in line and str(tmp_path / ".config" / "digest" / "digest.toml") in line
    assert not (tmp_path / ".local" / "share" / "digest").exists()  # nothing ran


def test_init_writes_a_starter_that_the_commands_then_find(tmp_path: Path) -> None:
    elsewhere = tmp_path / "somewhere"
    elsewhere.mkdir()
    result = run_cli("init", cwd=elsewhere, home=tmp_path)
    assert result.returncode == 0, result.stderr
    written = tmp_path / ".config" / "digest" / "digest.toml"
    assert f"wrote a starter config to {written}" in result.stdout
    for step in ("digest check-config", "digest send --dry-run", "[smtp]"):
        assert step in result.stdout
    text = written.read_text()
    assert "[[sources]]" in text and 'kind = "arxiv"' in text and 'email = "you@example.org"' in text
    assert "ada@example.org" not in text and '\nkind = "sample"' not in text
    # check-config finds it with no --config, and says so.
    checked = run_cli("check-config", cwd=elsewhere, home=tmp_path)
    assert checked.returncode == 0, checked.stderr
    assert checked.stderr.splitlines()[0] == f"config: {written}"
    assert "delivery: outbox" in checked.stdout and "sources: arxiv" in checked.stdout
    assert "subscribers: 1" in checked.stdout and "web front: none" in checked.stdout
    # A second init refuses to overwrite; --force does.
    written.write_text(text + "\n# my edits\n")
    again = run_cli("init", cwd=elsewhere, home=tmp_path)
    assert again.returncode == 2 and "already exists" in again.stderr and "--force" in again.stderr
    assert written.read_text().endswith("# my edits\n")
    forced = run_cli("init", "--force", cwd=elsewhere, home=tmp_path)
    assert forced.returncode == 0 and not written.read_text().endswith("# my edits\n")


def test_init_path_and_the_order_configs_are_found_in(tmp_path: Path) -> None:
    home = tmp_path / "home"
    project = tmp_path / "project"
    (project / "config").mkdir(parents=True)
    mine = tmp_path / "mine.toml"
    result = run_cli("init", "--path", str(mine), cwd=project, home=home)
    assert result.returncode == 0 and mine.is_file() and f"digest check-config --config {mine}" in result.stdout
    for path in (home / ".config" / "digest" / "digest.toml", project / "config" / "digest.toml"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(mine.read_text())

    def used(*args: str, **env: str) -> str:
        out = run_cli("check-config", *args, cwd=project, home=home, **env)
        assert out.returncode == 0, out.stderr
        return out.stderr.splitlines()[0]

    assert used() == f"config: {project / 'config' / 'digest.toml'}"  # ./config/digest.toml before the user folder
    assert used(DIGEST_CONFIG=str(mine)) == f"config: {mine}"  # then $DIGEST_CONFIG wins over it
    assert used("--config", str(example_config_path()), DIGEST_CONFIG=str(mine)) == f"config: {example_config_path()}"
    (project / "config" / "digest.toml").unlink()
    assert used() == f"config: {home / '.config' / 'digest' / 'digest.toml'}"


def test_the_starter_config_loads_and_documents_every_setting(tmp_path: Path) -> None:
    path = tmp_path / "digest.toml"
    path.write_text(starter_config())
    settings = load_settings(path)
    assert [s.kind for s in settings.sources] == ["arxiv"] and settings.sources[0].categories
    assert [s.email for s in settings.subscribers] == ["you@example.org"]
    assert settings.delivery.method == "outbox" and settings.web.base_url == ""
    text = starter_config()
    for dotted, _ in settings_fields():
        assert f"\n{dotted.rsplit('.', 1)[-1].removeprefix('[]')} = " in text, dotted
