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
    ('[smtp]\nport = "twenty-five"\n', "smtp.port", "integer"),
    ("[smtp]\nport = 70000\n", "smtp.port", "less than or equal"),
    ("[smtp]\nstarttls = true\nssl = true\n", "smtp", "choose one of starttls and ssl"),
    ('[smtp]\nhostname = "x"\n', "smtp.hostname", "unknown setting"),
    ('[delivery]\nmethod = "pigeon"\n', "delivery.method", "'smtp' or 'outbox'"),
    ('[[sources]]\nkind = "rss"\n', "sources[0].kind", "sample"),
    ('[[sources]]\nkind = "jsonl"\n', "sources[0]", "needs a path"),
    ('[[subscribers]]\nname = "Ada"\n', "subscribers[0].email", "required"),
    ('[[subscribers]]\nemail = "not-an-address"\n', "subscribers[0].email", "not an email address"),
    (
        GOOD_SUBSCRIBER + '[[subscribers]]\nemail = "b@example.org"\ntimezone = "Mars/Olympus"\n',
        "subscribers[1].timezone",
        "unknown time zone",
    ),
    ('[[subscribers]]\nemail = "a@example.org"\nsend_at = "7.30am"\n', "subscribers[0].send_at", "HH:MM"),
    ('[[subscribers]]\nemail = "a@example.org"\nsend_at = "25:00"\n', "subscribers[0].send_at", "HH:MM"),
    (
        '[[subscribers]]\nemail = "a@example.org"\nmax_papers = 0\n',
        "subscribers[0].max_papers",
        "greater than or equal",
    ),
    (
        '[[subscribers]]\nemail = "a@example.org"\nname = "Ada\\nBcc: victim@example.org"\n',
        "subscribers[0].name",
        "single line",
    ),
    ('[[subscribers]]\nemail = "a@example.org"\nliked = "2106.09685"\n', "subscribers[0].liked", "valid list"),
    ('[[subscribers]]\nemail = "a@example.org"\nkeywords = [""]\n', "subscribers[0].keywords", "must not be empty"),
    ('[delivery]\nsubject = "Hi\\r\\nBcc: x@example.org"\n', "delivery.subject", "single line"),
    (GOOD_SUBSCRIBER + GOOD_SUBSCRIBER, None, "listed twice"),
    ('[web]\nbase_url = "javascript:alert(1)"\n', "web.base_url", "http"),
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
    settings = load_settings(
        config, env={"DIGEST_SMTP_USERNAME": "u", "DIGEST_SMTP_PASSWORD": "p", "DIGEST_SECRET_KEY": "k"}
    )
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


# Files a careless or hostile user writes: each must fail at load (before a run changes anything),
# naming the file and the field, on one line, never with a traceback.
HOSTILE = [
    ('[delivery]\nsubject = "Digest for {name}"\n', "delivery.subject", "unknown placeholder {name}"),
    ('[delivery]\nsubject = "Digest {"\n', "delivery.subject", "literal braces"),
    ('[delivery]\nsubject = "{date!z}"\n', "delivery.subject", "unknown conversion"),
    ('[delivery]\nsubject = "{date.year}"\n', "delivery.subject", "unknown placeholder"),
    ('[delivery]\nsubject = "{count:zz}"\n', "delivery.subject", "does not format"),
    ('[delivery]\nsubject = "{0}"\n', "delivery.subject", "unknown placeholder"),
    ('[ranking]\nranker = "nonsense"\n', "ranking.ranker", "'hybrid'"),
    ('[database]\nurl = "::::"\n', "database.url", "not a database URL"),
    ('[database]\nurl = "mysql://db/x"\n', "database.url", "sqlite or postgresql"),
    ('[database]\nurl = "sqlite:///CONFIG/x/digest.db"\n', "database.url", "is a file"),
    ('[[subscribers]]\nemail = "a@example.org"\ntimezone = "Europe"\n', "subscribers[0].timezone", "unknown time zone"),
    (
        '[[subscribers]]\nemail = "a@example.org"\ntimezone = "' + "Europe/" * 50 + '"\n',
        "subscribers[0].timezone",
        "unknown time zone",
    ),
    (
        '[[subscribers]]\nemail = "a@example.org"\ntimezone = "../../etc/passwd"\n',
        "subscribers[0].timezone",
        "unknown time zone",
    ),
    ("subscribers = 5\n", "subscribers", "list of [[subscribers]]"),
    ("subscribers = [1]\n", "subscribers[0]", "dictionary"),
    ("subscribers_dir = 5\n", "subscribers_dir", "folder path"),
    ("x = " + "[" * 50_000 + "]" * 50_000 + "\n", None, "nested too deep"),
    ('[[subscribers]]\nemail = "a\\u0000b@example.org"\n', "subscribers[0].email", "control"),
    ('[[subscribers]]\nemail = "a\\u007fb@example.org"\n', "subscribers[0].email", "control"),
    ('[[subscribers]]\nemail = "j\u00fcrgen@example.org"\n', "subscribers[0].email", "smtputf8"),
    ('[[subscribers]]\nemail = "' + "a" * 300 + '@example.org"\n', "subscribers[0].email", "at most 254"),
    ('[smtp]\nsender = "nobody"\n', "smtp.sender", "no email address"),
    ('data_dir = "CONFIG/state"\n', "data_dir", "is a file"),
    ('[[subscribers]]\nemail = "a@example.org"\nsend_at = "0\u0667:30"\n', "subscribers[0].send_at", "HH:MM"),
]


@pytest.mark.parametrize(
    ("body", "field", "words"), HOSTILE, ids=[f"{i}-{m[1] or m[2]}" for i, m in enumerate(HOSTILE)]
)
def test_hostile_config_fails_at_load_naming_file_and_field(
    tmp_path: Path, body: str, field: str | None, words: str
) -> None:
    (tmp_path / "CONFIG").write_text("a file where a folder would have to be\n")
    path = tmp_path / "bad.toml"
    path.write_text(body.replace("CONFIG", (tmp_path / "CONFIG").as_posix()), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_settings(path, overrides={} if "data_dir" in body else {"data_dir": str(tmp_path / "data")})
    message = str(info.value)
    assert message.startswith(str(path)), message
    if field:
        assert info.value.field == field, message
    assert words in message, message
    assert "\n" not in message, message


def test_non_ascii_addresses_load_when_the_server_takes_smtputf8(tmp_path: Path) -> None:
    path = tmp_path / "digest.toml"
    path.write_text('[smtp]\nsmtputf8 = true\n[[subscribers]]\nemail = "J\u00fcrgen@example.org"\n', encoding="utf-8")
    assert load_settings(path).subscribers[0].email == "j\u00fcrgen@example.org"


def test_every_problem_of_a_file_is_listed_one_per_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        '[smtp]\nport = "x"\n[delivery]\nsubject = "{nope}"\n[ranking]\nranker = "z"\n'
        '[[subscribers]]\nemail = "a@example.org"\ntimezone = "Europe"\n'
    )
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    lines = str(info.value).splitlines()
    assert [p.field for p in info.value.problems] == [
        "smtp.port",
        "delivery.subject",
        "ranking.ranker",
        "subscribers[0].timezone",
    ]
    assert len(lines) == 4 and all(line.startswith(f"{path}: ") for line in lines)


def test_a_duplicate_in_the_subscriber_folder_names_that_file(tmp_path: Path) -> None:
    folder = tmp_path / "subs"
    folder.mkdir()
    (folder / "ada.toml").write_text('email = "ADA@example.org"\n')
    (folder / "bob.toml").write_text('email = "bob@example.org"\ntimezone = "Nowhere"\n')
    config = tmp_path / "digest.toml"
    config.write_text('subscribers_dir = "subs"\n' + GOOD_SUBSCRIBER + '[[subscribers]]\nemail = "c@example.org"\n')
    with pytest.raises(ConfigError) as info:
        load_settings(config)
    lines = str(info.value).splitlines()
    assert f"{folder / 'ada.toml'}: email: ada@example.org is listed twice" in lines
    assert any(line.startswith(f"{folder / 'bob.toml'}: timezone: unknown time zone") for line in lines)
    assert not any("subscribers[2]" in line or "subscribers[3]" in line for line in lines), lines


@pytest.mark.parametrize("field", ["liked", "keywords", "exclude_keywords"])
def test_list_entries_with_control_characters_are_refused(tmp_path: Path, field: str) -> None:
    """A NUL in a liked entry reached a PostgreSQL query (DataError, the run stopped)."""
    path = tmp_path / "bad.toml"
    path.write_text(f'[[subscribers]]\nemail = "a@example.org"\n{field} = ["fine", "bad\\u0000one"]\n')
    with pytest.raises(ConfigError, match=rf"subscribers\[0\]\.{field}: entries cannot contain control"):
        load_settings(path)
