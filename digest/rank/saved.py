"""Fit weekly, fold each day in: the saved ranker the daily run starts from.

A full fit of the hybrid over 200,000 papers and 100,000 readers takes minutes and most of the
daily run's memory, while a day adds about 1% new papers and changes the likes of a few readers.
So the daily run loads the last full fit from `<data_dir>/models`, folds today's data into it
(`Ranker.update`: new papers, new readers, changed likes), and refits only when the saved fit is
older than `ranking.refit_days`, was made with other ranking settings or an older format, cannot
be read, or the corpus or the community has grown by more than a quarter since.

The file holds two pickles written by this program into its own data folder (trusted like the
database next to it): a small header (format, settings, date, sizes), read first so that a fit of
an older format, other settings or the wrong age is refused without unpickling its ranker (whose
classes may have moved since), then the ranker.  It is replaced atomically, so a crash mid-write
leaves the previous fit.
"""

from __future__ import annotations

import logging
import os
import pickle
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

from digest.rank import Ranker, TrainData, make_ranker

log = logging.getLogger(__name__)

# bump when a ranker's saved state changes shape (3: the hybrid split into components; 4: built-in embeddings;
# 5: centred vectors and the ridge part: an older fit is refitted once, so its readers get them at once)
FORMAT = 5
GROWTH = 1.25  # refit when papers or readers grew by more than this factor since the fit


@dataclass
class ModelReport:
    """What the run did about its model, for the run report."""

    refit: bool
    reason: str
    fitted_at: datetime
    seconds: float
    new_papers: int = 0
    changed_readers: int = 0
    path: Path | None = None  # where the fit was saved, if it was

    def __str__(self) -> str:
        if self.refit:
            return f"ranker fitted in {self.seconds:.1f} s ({self.reason})"
        return (
            f"ranker of {self.fitted_at:%Y-%m-%d %H:%M} UTC updated in {self.seconds:.1f} s: "
            f"{self.new_papers} new paper(s), {self.changed_readers} new or changed reader(s)"
        )


def model_path(data_dir: Path, name: str) -> Path:
    return data_dir / "models" / f"{name}.pkl"


def ranker_for_day(
    name: str,
    options: dict,
    data: TrainData,
    now: datetime,
    *,
    data_dir: Path | None,
    refit_days: float,
    force: bool = False,
    save: bool = True,
) -> tuple[Ranker, ModelReport]:
    """The ranker for today's run: the saved fit with today folded in, or a new fit (then saved).

    `options` are `make_ranker` options (the hybrid's `embeddings` among them); `data_dir` None
    or `refit_days` 0 means fit every time and save nothing; `force` refits (and saves) anyway;
    `save` False uses a saved fit but never writes one (a dry run changes nothing).
    """
    start = time.perf_counter()
    ranker = make_ranker(name, **options)
    if data_dir is None or refit_days <= 0 or not getattr(ranker, "folds_in", False):
        ranker.fit(data)
        return ranker, ModelReport(True, "refit every run", now, time.perf_counter() - start)
    path = model_path(data_dir, name)
    fingerprint = _fingerprint(name, options)
    saved, reason = (None, "asked to refit") if force else _load(path, fingerprint, now, refit_days, data)
    if saved is not None:
        old = saved["ranker"]
        try:
            old.update(data, **{k: options[k] for k in ("embeddings", "keyword_embeddings") if k in options})
        except Exception as e:
            log.warning("saved ranker %s could not be updated (%s); refitting", path, e)
            reason = f"the saved fit could not be updated: {e}"
        else:
            info = getattr(old, "last_update", {})
            return old, ModelReport(
                False,
                "",
                saved["fitted_at"],
                time.perf_counter() - start,
                info.get("new_papers", 0),
                info.get("changed_users", 0),
            )
    ranker.fit(data)
    if not save:
        return ranker, ModelReport(True, reason + " (not saved: a dry run)", now, time.perf_counter() - start)
    ranker.prepare_update()
    header = {
        "format": FORMAT,
        "fingerprint": fingerprint,
        "fitted_at": now,
        "papers": len(data.corpus),
        "users": len(data.users),
    }
    _save(path, header, ranker)
    return ranker, ModelReport(True, reason, now, time.perf_counter() - start, path=path)


def _fingerprint(name: str, options: dict) -> dict:
    """What a saved fit must match to be reused (the embeddings' presence, not their values)."""
    plain = {k: v for k, v in options.items() if not isinstance(v, np.ndarray | dict)}  # not the vectors
    return {
        "format": FORMAT,
        "ranker": name,
        "options": repr(sorted(plain.items())),
        "embeddings": "embeddings" in options,
    }


def _load(path: Path, fingerprint: dict, now: datetime, refit_days: float, data: TrainData) -> tuple[dict | None, str]:
    """(the saved header with its "ranker", "") if it can be reused today, else (None, why a refit is due)."""
    if not path.exists():
        return None, "no saved fit"
    try:
        with path.open("rb") as f:
            saved = pickle.load(f)  # the header (before format 3: the whole record)
            if not isinstance(saved, dict) or saved.get("format") != FORMAT:
                log.warning("saved ranker %s has an older format; refitting once", path)
                return None, "the saved fit has an older format"
            if saved.get("fingerprint") != fingerprint:
                return None, "ranking settings changed"
            age = now - saved["fitted_at"]
            if age >= timedelta(days=refit_days) or age < timedelta(0):
                return None, f"the saved fit is {age.days} day(s) old (refit_days = {refit_days:g})"
            if len(data.corpus) > GROWTH * saved["papers"] or len(data.users) > GROWTH * saved["users"] + 10:
                return None, "the corpus or the community grew by more than a quarter"
            saved["ranker"] = pickle.load(f)
    except Exception as e:
        log.warning("cannot read saved ranker %s (%s); refitting", path, e)
        return None, f"the saved fit could not be read ({type(e).__name__})"
    return saved, ""


def _save(path: Path, header: dict, ranker: Ranker) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    with tmp.open("wb") as f:
        pickle.dump(header, f, protocol=5)
        pickle.dump(ranker, f, protocol=5)
    os.replace(tmp, path)
