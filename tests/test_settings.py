"""The config loader: valid files load; each malformed file gives one clear error naming the field."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from digest.errors import ConfigError
from digest.settings import example_config_path, load_settings, settings_fields

GOOD_SUBSCRIBER = """
[[subscribers]]
email = "ada@example.org"
timezone = "Europe/Berlin"
send_at = "07:30"
"""

MALFORMED = [
    # (file body, field named in the error, words expected in the message)
    ("data_dir = \n", None, "not valid TOML"),
    ("[smtp]\nport = \"twenty-five\"\n", "smtp.port", "integer"),
    ("[smtp]\nport = 70000\n", "smtp.port", "less than or equal"),
    ("[smtp]\nstarttls = true\nssl = true\n", "smtp", "choose one of starttls and ssl"),
    ("[smtp]\nhostname = \"x\"\n", "smtp.hostname", "unknown setting"),
    ("[delivery]\nmethod = \"pigeon\"\n", "delivery.method", "'smtp' or 'outbox'"),
    ("[[sources]]\nkind = \"rss\"\n", "sources[0].kind", "sample"),
    ("[[sources]]\nkind = \"jsonl\"\n", "sources[0]", "needs a path"),
    ("[[subscribers]]\nname = \"Ada\"\n", "subscribers[0].email", "required"),
    ("[[subscribers]]\nemail = \"not-an-address\"\n", "subscribers[0].email", "not an email address"),
    (GOOD_SUBSCRIBER + "[[subscribers]]\nemail = \"b@example.org\"\ntimezone = \"Mars/Olympus\"\n", "subscribers[1].timezone", "unknown time zone"),
    ("[[subscribers]]\nemail = \"a@example.org\"\nsend_at = \"7.30am\"\n", "subscribers[0].send_at", "HH:MM"),
    ("[[subscribers]]\nemail = \"a@example.org\"\nsend_at = \"25:00\"\n", "subscribers[0].send_at", "HH:MM"),
    ("[[subscribers]]\nemail = \"a@example.org\"\nmax_papers = 0\n", "subscribers[0].max_papers", "greater than or equal"),
    ("[[subscribers]]\nemail = \"a@example.org\"\nname = \"Ada\\nBcc: victim@example.org\"\n", "subscribers[0].name", "single line"),
    ("[[subscribers]]\nemail = \"a@example.org\"\nliked = \"2106.09685\"\n", "subscribers[0].liked", "valid list"),
    ("[[subscribers]]\nemail = \"a@example.org\"\nkeywords = [\"\"]\n", "subscribers[0].keywords", "must not be empty"),
    ("[delivery]\nsubject = \"Hi\\r\\nBcc: x@example.org\"\n", "delivery.subject", "single line"),
    (GOOD_SUBSCRIBER + GOOD_SUBSCRIBER, None, "listed twice"),
    ("[web]\nbase_url = \"javascript:alert(1)\"\n", "web.base_url", "http"),
]


@pytest.mark.parametrize(("body", "field", "words"), MALFORMED, ids=[m[1] or m[2] for m in MALFORMED])
def test_malformed_config_names_file_and_field(tmp_path: Path, body: str, field: str | None, words: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(body, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    message = str(info.value)
    assert message.startswith(str(path)), message
    if field:
        assert info.value.field == field, message
        assert f": {field}: " in message
    assert words in message, message
    assert "\n" not in message


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_settings(tmp_path / "nope.toml")


def test_subscriber_folder_errors_name_the_subscriber_file(tmp_path: Path) -> None:
    folder = tmp_path / "subs"
    folder.mkdir()
    (folder / "ada.toml").write_text('email = "ada@example.org"\ntimezone = "Europe/London"\n')
    (folder / "bob.toml").write_text('email = "bob@example.org"\nsend_at = "noon"\n')
    config = tmp_path / "digest.toml"
    config.write_text('subscribers_dir = "subs"\n')
    with pytest.raises(ConfigError) as info:
        load_settings(config)
    assert str(info.value).startswith(str(folder / "bob.toml") + ": send_at: ")


def test_subscriber_folder_and_inline_subscribers_combine(tmp_path: Path) -> None:
    folder = tmp_path / "subs"
    folder.mkdir()
    (folder / "bob.toml").write_text('email = "Bob@Example.org"\nname = "Bob"\nkeywords = ["graphs"]\n')
    config = tmp_path / "digest.toml"
    config.write_text('subscribers_dir = "subs"\n' + GOOD_SUBSCRIBER)
    settings = load_settings(config)
    assert [s.email for s in settings.subscribers] == ["ada@example.org", "bob@example.org"]
    assert settings.subscriber("BOB@example.org").keywords == ["graphs"]


def test_secrets_come_only_from_the_environment(tmp_path: Path) -> None:
    config = tmp_path / "digest.toml"
    config.write_text('[smtp]\npassword = "hunter2"\n')
    with pytest.raises(ConfigError, match="smtp.password: unknown setting"):
        load_settings(config)
    config.write_text("")
    settings = load_settings(config, env={"DIGEST_SMTP_USERNAME": "u", "DIGEST_SMTP_PASSWORD": "p", "DIGEST_SECRET_KEY": "k"})
    assert settings.smtp_password.get_secret_value() == "p"
    assert "p" not in repr(settings.smtp_password)


def test_data_dir_placeholders(tmp_path: Path) -> None:
    config = tmp_path / "digest.toml"
    config.write_text('data_dir = "state"\n')
    settings = load_settings(config)
    assert settings.database_url == f"sqlite:///{(tmp_path / 'state').as_posix()}/digest.db"
    assert settings.outbox_path == tmp_path / "state" / "outbox"


def test_example_config_loads() -> None:
    settings = load_settings(example_config_path())
    assert settings.subscribers and settings.sources


def test_every_setting_is_documented_in_the_example() -> None:
    """Each schema field appears in the example config, with a comment line just above it."""
    text = example_config_path().read_text(encoding="utf-8")
    raw = tomllib.loads(text)
    lines = text.splitlines()
    for dotted, info in settings_fields():
        assert info.description, f"{dotted} has no help text in the schema"
        node: object = raw
        for part in dotted.split("."):
            if part.endswith("[]"):
                node = node[part[:-2]][0]  # type: ignore[index]
            else:
                assert isinstance(node, dict) and part in node, f"{dotted} is missing from {example_config_path()}"
                node = node[part]
        key = dotted.split(".")[-1]
        index = next(i for i, line in enumerate(lines) if re.match(rf"^\s*{re.escape(key)}\s*=", line))
        assert lines[index - 1].lstrip().startswith("#"), f"{dotted} has no comment above it in the example config"
