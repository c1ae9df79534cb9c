"""The `digest` command: one function per subcommand, errors turned into one-line messages here.

Every domain error is a `DigestError`; this edge prints it as `error: ...` and exits non-zero,
never with a traceback for bad input.
"""

from __future__ import annotations

import shutil
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import platformdirs
import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from digest.errors import ConfigError, DigestError
from digest.settings import Settings, default_config_path, example_config_path, load_settings, user_config_path

app = typer.Typer(
    help="A personalised research-paper digest: ranks new papers for each reader and emails them daily.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()
err_console = Console(stderr=True)

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="Config file (default: $DIGEST_CONFIG, else config/digest.toml here, else digest.toml in your "
        "user config folder, which `digest init` writes).",
    ),
]
NowOption = Annotated[
    str | None,
    typer.Option(
        help="Run as of this moment, ISO 8601 with offset, e.g. 2026-11-23T08:00:00+00:00 (default: now); "
        "links are never signed, nor source checkpoints moved, past the real time."
    ),
]


def _config_path(config: Path | None) -> Path:
    """The config file a command uses, said on one line (on stderr, so output stays parseable)."""
    path = config or default_config_path()
    err_console.print(f"config: {path}", markup=False, highlight=False, soft_wrap=True)
    return path


def _settings(config: Path | None, **overrides: object) -> Settings:
    return load_settings(_config_path(config), overrides=overrides or None)


def _parse_now(value: str | None) -> datetime:
    if value is None:
        return datetime.now(UTC)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as e:
        raise ConfigError(f"--now {value!r} is not an ISO 8601 date-time such as 2026-11-23T08:00:00+00:00") from e
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class _Bar:
    """Feeds the pipeline's progress hook into a rich progress bar."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.tasks: dict[str, TaskID] = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage not in self.tasks:
            self.tasks[stage] = self.progress.add_task(stage, total=total or None)
        self.progress.update(self.tasks[stage], completed=done, total=total or None)


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=False,
        disable=not err_console.is_terminal,
    )


def _print_intake(report: Any) -> None:
    """What a run or a planner took in: each source's counts, the model, liked ids looked up,
    likes that match nothing, libraries read (a RunReport or a PlanReport)."""
    for src in report.sources:
        if src.error:
            console.print(f"[red]source {escape(src.name)}: failed: {escape(src.error)}[/red]", highlight=False)
        else:
            c = src.counts
            console.print(
                f"source {src.name}: {c.new} new, {c.updated} updated, {c.unchanged} unchanged; "
                f"skipped: {src.skipped_line()}",
                markup=False,
                highlight=False,
            )
        for note in src.notes:
            console.print(f"  note: {note}", markup=False, highlight=False)
    if report.model is not None:
        console.print(str(report.model), highlight=False)
    for line in report.lookup_notes:
        console.print(f"[yellow]{escape(line)}[/yellow]", highlight=False, soft_wrap=True)
    for email, entries in report.unmatched_likes.items():
        for entry in entries:
            console.print(
                f"[yellow]{escape(email)}: liked entry matches no known paper: {escape(repr(entry))}[/yellow]"
            )
    for line in report.libraries:
        console.print(line, markup=False, highlight=False)


def _print_report(report: Any, *, show_picks: bool) -> None:
    _print_intake(report)
    for out in report.outcomes:
        line = f"{out.email}: {out.status}"
        if out.digest_date:
            line += f" ({out.digest_date})"
        if out.detail:
            line += f" - {out.detail}"
        console.print(line, markup=False, highlight=False)
        if show_picks and out.picks:
            table = Table(show_header=True, header_style="bold", box=None, padding=(0, 1))
            # in the order sent, without the raw score: after the diversity re-ranking it is not the order
            table.add_column("#", justify="right")
            table.add_column("paper")
            table.add_column("why")
            for i, pick in enumerate(out.picks, 1):
                table.add_row(str(i), escape(pick.paper.title), escape(pick.reason))
            console.print(table)
        if out.html_path:
            console.print(f"  HTML digest: {out.html_path}")
    if report.busy:
        console.print(f"[yellow]{escape(report.busy)}[/yellow]", highlight=False)
    if report.unreachable:
        err_console.print(
            f"[yellow]mail server unreachable, the rest wait for the next run: {escape(report.unreachable)}[/yellow]"
        )
    if report.fatal:
        err_console.print(f"[red]error: {escape(report.fatal)}[/red]")


@app.command()
def demo(
    data_dir: Annotated[
        Path | None,
        typer.Option(help="Folder for the demo's database and outbox (default: your user data folder/demo)."),
    ] = None,
    now: NowOption = None,
) -> None:
    """Run the whole daily job once on the bundled sample papers and the example config.

    Starts from a fresh demo database each time, delivers to a local outbox folder (.eml files),
    and prints the example subscriber's picks in the order sent, with their reasons.
    """
    from digest.db import discard_database
    from digest.pipeline import run_daily

    folder = (data_dir or Path(platformdirs.user_data_dir("digest")) / "demo").expanduser().resolve()
    folder.mkdir(parents=True, exist_ok=True)
    discard_database(folder / "digest.db")  # on purpose, so the store does not refuse it as missing
    for leftover in ("outbox", "digests", "models"):
        target = folder / leftover
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
    err_console.print(f"config: {example_config_path()} (the bundled example)", markup=False, highlight=False)
    settings = load_settings(example_config_path(), overrides={"data_dir": str(folder)})
    settings = settings.model_copy(update={"delivery": settings.delivery.model_copy(update={"method": "outbox"})})
    console.print(f"demo data folder: {folder}")
    with _progress() as progress:
        report = run_daily(_parse_now(now), settings, force=True, keep_html=True, progress=_Bar(progress))
    _print_report(report, show_picks=True)
    for out in report.outcomes:
        if out.status == "sent" and out.digest_date is not None:
            console.print(f"  email written to the outbox: {settings.outbox_path / out.digest_date.isoformat()}")
    if report.fatal or any(o.status == "failed" for o in report.outcomes):
        raise typer.Exit(1)


@app.command()
def send(
    config: ConfigOption = None,
    now: NowOption = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Render and save HTML previews; send and record nothing.")
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="Ignore send times (still one digest a day).")] = False,
    only: Annotated[list[str] | None, typer.Option("--only", help="Only this subscriber (repeatable).")] = None,
) -> None:
    """Run the daily job once: ingest, rank, render and deliver for every subscriber who is due."""
    from digest.pipeline import run_daily

    settings = _settings(config)
    with _progress() as progress:
        report = run_daily(
            _parse_now(now),
            settings,
            dry_run=dry_run,
            force=force,
            only=[o.lower() for o in only] if only else None,
            progress=_Bar(progress),
        )
    _print_report(report, show_picks=dry_run)
    counts = report.by_status()
    if not report.busy:
        console.print(
            "summary: " + (", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "no subscribers")
        )
    if report.fatal:
        raise typer.Exit(1)


@app.command()
def run(config: ConfigOption = None) -> None:
    """Keep running: every minute, send the digests that are due (every reader in the database, web
    sign-ups included, at their send time in their time zone).  Ctrl-C stops."""
    from digest.schedule import run_forever

    path = _config_path(config)
    settings = load_settings(path)
    console.print(
        f"checking every minute who is due; Ctrl-C to stop, kill -HUP to re-read {path} now "
        f"(it is re-read every {settings.schedule.reload_minutes:g} min)"
    )
    try:
        run_forever(settings, path, log_line=lambda line: console.print(line, markup=False, highlight=False))
    finally:
        # This process is on its way out (stopped, or a StoreError to report).  Python puts the default
        # SIGHUP action back while it shuts down, and a `kill -HUP` then would end it before it has said
        # why it stopped; an ignored signal stays ignored to the end.
        if hasattr(signal, "SIGHUP"):
            signal.signal(signal.SIGHUP, signal.SIG_IGN)


@app.command()
def status(config: ConfigOption = None, now: NowOption = None) -> None:
    """Per subscriber: the last digest (date, status, attempts, Message-ID), the next one due, any failure."""
    from zoneinfo import ZoneInfo

    from digest.db import RUN_LEASE, DeliveryStatus, Store, aware
    from digest.due import due_day, next_send

    settings = _settings(config)
    moment = _parse_now(now).astimezone(UTC)
    store = Store(settings.database_url)
    try:
        lease = store.lease(RUN_LEASE)
        if lease is not None and aware(lease.expires) > moment:
            console.print(
                f"a daily run is in progress: {lease.owner} (lease until {aware(lease.expires):%Y-%m-%d %H:%M:%S} UTC)",
                highlight=False,
                soft_wrap=True,
            )
        _print_source_states(store, settings)
        known = {s.email for s in settings.subscribers}
        subscribers = list(settings.subscribers) + [s for s in store.subscribers() if s.email not in known]
        if not subscribers:
            console.print("no subscribers")
        for sub in subscribers:
            zone = ZoneInfo(sub.timezone)
            days = {"daily": "every day", "weekdays": "Monday to Friday", "weekly": f"{sub.weekly_day}s"}[sub.frequency]
            console.print(
                f"[bold]{escape(sub.email)}[/bold]  {sub.send_at} {sub.timezone}, {days}",
                highlight=False,
                soft_wrap=True,
            )
            row = store.subscriber(email=sub.email)
            last = store.last_delivery(row.id) if row is not None else None
            if last is None:
                console.print("  last digest: none yet", highlight=False, soft_wrap=True)
            else:
                tries = f"{last.attempts} attempt{'s' if last.attempts != 1 else ''}"
                console.print(
                    f"  last digest: {last.digest_date} {last.status} ({tries}) {last.message_id}",
                    highlight=False,
                    soft_wrap=True,
                )
            day = due_day(sub, moment, catch_up_hours=settings.schedule.catch_up_hours)
            if last is not None and last.status == DeliveryStatus.PENDING:
                retry = aware(last.next_attempt_at)
                when = (
                    f"after {retry.astimezone(zone):%a %Y-%m-%d %H:%M} {sub.timezone}"
                    if retry and retry > moment
                    else "at the next run"
                )
                console.print(f"  next digest: {last.digest_date} (retry {when})", highlight=False, soft_wrap=True)
            elif day is not None and (row is None or store.delivery(row.id, day) is None):
                console.print(f"  next digest: {day} (due now)", highlight=False, soft_wrap=True)
            else:
                upcoming = next_send(sub, moment).astimezone(zone)
                console.print(
                    f"  next digest: {upcoming:%a %Y-%m-%d %H:%M} {sub.timezone}", highlight=False, soft_wrap=True
                )
            if last is not None and last.status in (DeliveryStatus.PENDING, DeliveryStatus.FAILED) and last.error:
                console.print(f"  [red]problem:[/red] {escape(last.error)}", highlight=False, soft_wrap=True)
            if last is not None and last.status == DeliveryStatus.FAILED:
                console.print(
                    f"  to send it again: digest retry {sub.email} --date {last.digest_date}",
                    markup=False,
                    highlight=False,
                    soft_wrap=True,
                )
    finally:
        store.close()


def _print_source_states(store, settings: Settings) -> None:
    """For `digest status`: each arXiv listing's last announcement ("arXiv announced nothing on ...")
    and any source's last failure."""
    from digest.sources.arxiv_rss import status_line

    for src in settings.sources:
        state = store.source_state(src.label)
        if src.kind == "arxiv_rss":
            console.print(
                f"source {src.label}: {status_line(state.cursor if state else None)}",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
        if state is not None and state.last_error:
            console.print(
                f"source {src.label}: last run failed: {state.last_error}",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )


@app.command()
def retry(
    email: Annotated[str, typer.Argument(help="The reader whose digest failed.")],
    config: ConfigOption = None,
    day: Annotated[
        str | None,
        typer.Option("--date", help="The digest's date, YYYY-MM-DD (default: the reader's latest failed digest)."),
    ] = None,
) -> None:
    """Queue a failed digest again once its cause is fixed: same papers, same Message-ID.

    The next `digest send` or `digest run` (or a `digest worker`) sends it, once.  A digest that
    was sent, or is still waiting for its own retry, is left alone.
    """
    from datetime import date

    from digest.db import Store
    from digest.errors import StoreError

    settings = _settings(config)
    try:
        digest_date = date.fromisoformat(day) if day else None
    except ValueError as e:
        raise ConfigError(f"--date {day!r} is not a date such as 2026-11-23") from e
    address = email.strip().lower()
    store = Store(settings.database_url)
    try:
        sub = store.subscriber(email=address)
        if sub is None or sub.id is None:
            raise DigestError(f"{address} is not a reader in the database (digest status lists them)")
        try:
            row = store.requeue_delivery(sub.id, digest_date, datetime.now(UTC))
        except StoreError:
            raise
        except DigestError as e:
            raise DigestError(f"{address}: {e}") from e
    finally:
        store.close()
    console.print(
        f"{address}: the digest of {row.digest_date} is queued again ({len(row.papers)} papers, "
        f"{row.message_id}); the next digest send or digest run sends it",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )


@app.command()
def migrate(
    config: ConfigOption = None,
    autogenerate: Annotated[
        str | None,
        typer.Option(
            "--autogenerate",
            metavar="MESSAGE",
            help="For developers: after upgrading, write a new revision for what the tables in digest/db/tables.py have that the migrations lack.",
        ),
    ] = None,
) -> None:
    """Upgrade the database's schema to this version of digest (Alembic; back the database up first)."""
    from digest import migrations
    from digest.db import Store

    settings = _settings(config)
    store = Store(settings.database_url, migrate=True)
    try:
        if autogenerate:
            console.print(f"new revision: {migrations.autogenerate(store.engine, autogenerate)}")
        else:
            console.print(
                f"{settings.database_url}: schema at revision {migrations.head()} (up to date)", highlight=False
            )
    finally:
        store.close()


@app.command()
def worker(
    config: ConfigOption = None,
    now: NowOption = None,
    batch: Annotated[int, typer.Option(min=1, help="Deliveries claimed at a time.")] = 500,
    plan: Annotated[
        bool,
        typer.Option(
            "--plan",
            help="First plan the day: ingest, rank everyone due, write their pending digests (run once, by one worker).",
        ),
    ] = False,
) -> None:
    """Send planned digests until none is left (run several, on one machine or many, against one database)."""
    from digest.db import Store
    from digest.workers import plan_day, work

    settings = _settings(config)
    store = Store(settings.database_url)
    try:
        if plan:
            planned = plan_day(store, settings, _parse_now(now))
            if planned.busy:
                console.print(f"[yellow]{escape(planned.busy)}[/yellow]", highlight=False)
            else:
                _print_intake(planned)
                console.print(f"planned {planned.planned} digest(s)")
        report = work(store, settings, _parse_now(now), batch=batch)
    finally:
        store.close()
    console.print(
        f"{report.worker}: {report.sent} sent, {report.in_feed} into feeds only, "
        f"{report.pending} to retry, {report.failed} failed"
    )
    if report.fatal:
        err_console.print(f"error: {report.fatal}", markup=False, highlight=False)
        raise typer.Exit(1)


@app.command()
def fit(config: ConfigOption = None, now: NowOption = None) -> None:
    """Refit the ranker from scratch on everything in the database and save it for the daily runs.

    Daily runs fold each day into the saved fit and refit by themselves when it is `refit_days`
    old; for a large community run this off-hours instead (e.g. weekly from cron), so no daily
    run has to wait for a full fit.
    """
    from digest.db import Store
    from digest.pipeline import day_ranker, train_data

    settings = _settings(config)
    store = Store(settings.database_url)
    try:
        data = train_data(store, store.subscribers())
    finally:
        store.close()
    _, report = day_ranker(settings, data, _parse_now(now).astimezone(UTC), refit=True)
    console.print(
        f"{report} on {len(data.corpus)} papers, {len(data.users)} readers, {data.likes.nnz} likes; "
        + (
            f"; saved to {report.path}"
            if report.path
            else " (refit_days = 0 or a ranker without a saved fit: nothing saved)"
        ),
        highlight=False,
        soft_wrap=True,
    )


@app.command("check-config")
def check_config(config: ConfigOption = None) -> None:
    """Validate a config file and print what it sets up."""
    path = _config_path(config)
    settings = load_settings(path)
    console.print(f"{path}: OK")
    console.print(f"  database: {settings.database_url}")
    console.print(f"  delivery: {settings.delivery.method}")
    console.print(f"  sources: {', '.join(s.label for s in settings.sources) or 'none'}")
    console.print(f"  subscribers: {len(settings.subscribers)}")
    console.print(f"  web front: {settings.web.base_url or 'none (plain links in emails, unsubscribe by email)'}")


@app.command()
def init(
    path: Annotated[
        Path | None,
        typer.Option("--path", help="Where to write it (default: digest.toml in your user config folder)."),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite a file that is already there.")] = False,
) -> None:
    """Write a commented starter config (one reader, arXiv papers, delivery to an outbox folder) and
    say how to send a first digest."""
    from digest.settings import starter_config

    target = (path or user_config_path()).expanduser()
    if target.exists() and not force:
        raise ConfigError(f"{target} already exists; edit it, or pass --force to overwrite it")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(starter_config(), encoding="utf-8")
    here = "" if path is None or target == user_config_path() else f" --config {target}"
    console.print(
        f"wrote a starter config to {target}\n"
        "next:\n"
        f"  1. edit it: your address and the papers you like under [[subscribers]], the arXiv categories under [[sources]]\n"
        f"  2. digest check-config{here}      validates it and says what it sets up\n"
        f"  3. digest send --dry-run{here}    fetches papers and renders your first digest, sends nothing\n"
        f'  4. set [smtp] and [delivery] method = "smtp" (login in DIGEST_SMTP_USERNAME / DIGEST_SMTP_PASSWORD), '
        f"then digest send{here}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )


@app.command("import-listing")
def import_listing(
    pages: Annotated[list[Path], typer.Argument(help="Saved listing pages (.txt) or folders of them.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="JSON Lines file to write.")],
) -> None:
    """Turn saved listing pages into a JSON Lines paper file (how the bundled sample was made)."""
    from digest.sources.files import write_jsonl
    from digest.sources.listing import listing_files, read_listings

    files = [f for page in pages for f in listing_files(page)]
    result = read_listings(files, source="listing")
    count = write_jsonl(result.records, output)
    skipped = ", ".join(f"{n} {why}" for why, n in result.skipped.most_common()) or "none"
    console.print(f"{count} papers from {len(files)} page(s) written to {output}; skipped: {skipped}")


@app.command("import-library")
def import_library(
    file: Annotated[Path, typer.Argument(help="A BibTeX (.bib), RIS (.ris) or CSL-JSON (.json) library export.")],
    email: Annotated[str, typer.Option("--email", help="The reader whose liked papers the library becomes.")],
    config: ConfigOption = None,
    now: NowOption = None,
) -> None:
    """Import a reader's library (Zotero, Mendeley, JabRef exports) as their liked papers.

    Importing the same file again replaces that file's likes; the papers stay out of the day's news."""
    from digest import pipeline
    from digest.db import Store
    from digest.sources.base import MAX_EXAMPLES
    from digest.sources.library import read_library

    settings = _settings(config)
    moment = _parse_now(now)
    result = read_library(file)
    store = Store(settings.database_url)
    try:
        pipeline.sync_subscribers(store, settings, moment)
        row = store.subscriber(email=email.strip())
        if row is None:
            raise DigestError(f"--email: no reader {email.strip()!r} (add them to the config or sign them up first)")
        line = pipeline.import_library(store, row.id, result, moment, origin=f"import:{file.name}")
    finally:
        store.close()
    console.print(f"{row.email}: library {file.name}: {line}", markup=False, highlight=False)
    if len(result.problems) > MAX_EXAMPLES:  # the line names the first few
        for problem in result.problems:
            console.print(f"  {problem}", markup=False, highlight=False)


@app.command()
def ingest(
    config: ConfigOption = None,
    source: Annotated[
        list[str] | None,
        typer.Option("--source", "-s", help="Only the source with this name (repeatable; default: all)."),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(
            help="Fetch from this date, YYYY-MM-DD, whatever the saved checkpoints say (default: since the last run)."
        ),
    ] = None,
    now: NowOption = None,
) -> None:
    """Fetch new papers from the configured sources into the database, without ranking or sending."""
    from datetime import date

    from digest.db import Store
    from digest.pipeline import ingest as run_ingest

    settings = _settings(config)
    labels = [s.label for s in settings.sources]
    unknown = [name for name in source or [] if name not in labels]
    if unknown:
        raise ConfigError(
            f"no source named {unknown[0]!r} (configured: {', '.join(labels) or 'none'})", field="--source"
        )
    try:
        start = date.fromisoformat(since) if since else None
    except ValueError as e:
        raise ConfigError(f"--since {since!r} is not a date such as 2026-11-20") from e
    store = Store(settings.database_url)
    try:
        with _progress() as progress:
            reports = run_ingest(store, settings, _parse_now(now), _Bar(progress), only=source or None, since=start)
    finally:
        store.close()
    for src in reports:
        c = src.counts
        style = "red" if src.error else "green"
        console.print(
            f"[{style}]{escape(src.name)}[/{style}]: {c.new} new, {c.updated} updated, {c.unchanged} unchanged; "
            f"skipped: {escape(src.skipped_line())}",
            highlight=False,
        )
        for note in src.notes:
            console.print(f"  note: {note}", markup=False, highlight=False)
        if src.error:
            console.print(f"  [red]error:[/red] {escape(src.error)}", highlight=False)
    if any(src.error for src in reports):
        raise typer.Exit(1)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on (0.0.0.0 for every interface).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port to listen on.")] = 8000,
    config: ConfigOption = None,
) -> None:
    """Serve the web front: feedback and unsubscribe links from emails, sign-up, preferences.

    Links in emails point at [web] base_url, so set it to where this server is reachable.  Sign
    links with the same DIGEST_SECRET_KEY as the daily job (or share its data folder).
    """
    import uvicorn

    from digest.web import create_app

    settings = _settings(config)
    if not settings.web.base_url:  # its own links (sign-up confirmations) need an address: this one
        settings = settings.model_copy(
            update={"web": settings.web.model_copy(update={"base_url": f"http://{host}:{port}"})}
        )
        err_console.print(
            "note: [web] base_url is empty, so the daily emails carry no links to this server; "
            "set it to the address readers reach it at",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    console.print(
        f"serving on http://{host}:{port} (links in emails point at {settings.web.base_url})",
        highlight=False,
        soft_wrap=True,
    )
    uvicorn.run(create_app(settings), host=host, port=port, proxy_headers=True, log_level="info")


@app.command("eval")
def eval_(
    data_dir: Annotated[
        Path, typer.Argument(help="Benchmark folder: papers.jsonl, train.csv, test.csv, optional candidates.txt.")
    ],
    k: Annotated[str, typer.Option("--k", help="Cut-offs for recall@k, comma-separated.")] = "10,20,50,100,300",
    methods: Annotated[
        str, typer.Option("--methods", help="Rankers to compare, comma-separated.")
    ] = "popularity,random,content,svm,collaborative,hybrid",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of a table.")] = False,
    plot: Annotated[
        Path | None, typer.Option("--plot", help="Also draw recall@k curves to this PNG (needs matplotlib).")
    ] = None,
    svm_users: Annotated[
        int,
        typer.Option(
            "--svm-users", help="svm fits one model per user: evaluate it on this many sampled users (0: all)."
        ),
    ] = 500,
    embeddings: Annotated[
        str,
        typer.Option(
            "--embeddings",
            help='Sentence embeddings for the hybrid: "minilm" (built in), "minilm-torch" (the embeddings extra) or "none".',
        ),
    ] = "minilm",
    cache_dir: Annotated[
        Path | None,
        typer.Option(
            "--cache-dir",
            help="Embedding cache folder (default $DIGEST_DATA_DIR/cache/embeddings, else ~/.cache/digest/embeddings).",
        ),
    ] = None,
) -> None:
    """Measure the rankers on a benchmark folder: recall@k and nDCG@10 per method."""
    import json

    from digest.evaluate import parse_list, plot_recall, run_eval
    from digest.rank import RANKERS

    try:
        ks = parse_list(k, cast=int)
        names = parse_list(methods)
    except ValueError as e:
        raise DigestError(f"--k and --methods take comma-separated lists ({e})") from e
    if any(x <= 0 for x in ks):
        raise DigestError("--k values must be positive")
    unknown = [m for m in names if m not in RANKERS]
    if unknown:
        raise DigestError(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(sorted(RANKERS))}")
    with _progress() as bar:
        tasks: dict[str, TaskID] = {}

        def advance(method: str, done: int, total: int) -> None:
            if method not in tasks:
                tasks[method] = bar.add_task(f"eval {method}", total=total)
            bar.update(tasks[method], completed=done)

        result = run_eval(
            data_dir,
            ks,
            names,
            progress=advance,
            svm_users=svm_users or None,
            embeddings=embeddings,
            cache_dir=cache_dir,
        )
    if plot is not None:
        plot_recall(result, plot, ks)
    if as_json:
        print(json.dumps(result))
        return
    # short headers and no vertical rules, so five cut-offs fit in 80 columns (a pipe or a narrow terminal)
    table = Table(
        title=f"{result['bench']}: {result['users']} users with held-out papers",
        caption="r@k: recall@k"
        + ("; * sampled users" if any(r.get("sampled") for r in result["methods"].values()) else "")
        + (
            f"; hybrid: {result['embeddings']} embeddings, {result['embedding_seconds']:.1f} s"
            if "embeddings" in result
            else ""
        ),
        header_style="bold",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        collapse_padding=True,
    )
    table.add_column("method", no_wrap=True)
    for kk in ks:
        table.add_column(f"r@{kk}", justify="right", no_wrap=True)
    table.add_column("nDCG@10", justify="right", no_wrap=True)
    table.add_column("users", justify="right", no_wrap=True)
    table.add_column("sec", justify="right", no_wrap=True)
    for name, res in result["methods"].items():
        users = f"{res['users']}" + ("*" if res.get("sampled") else "")
        table.add_row(
            name, *(f"{res[f'recall@{kk}']:.4f}" for kk in ks), f"{res['ndcg@10']:.4f}", users, f"{res['seconds']:.1f}"
        )
    console.print(table)
    if plot is not None:
        console.print(f"plot: {plot}")


def main() -> None:
    """Console entry point: run the app, turning our errors into one line and exit code 2."""
    try:
        app()
    except DigestError as e:
        for line in str(e).splitlines() or [e.__class__.__name__]:  # a config error: one line per problem
            err_console.print(f"error: {line}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)
