"""Finds the files that ship with digest (templates, the example config) wherever it is installed.

A wheel carries them inside the package (`digest/templates`, `digest/config`); an editable install
or a source checkout has them at the top of the repository.  Both layouts are looked up here, once.
"""

from __future__ import annotations

from pathlib import Path

from digest.errors import DigestError

PACKAGE_DIR = Path(__file__).resolve().parent


def resource_path(relative: str) -> Path:
    """The shipped file or folder `relative` (e.g. "templates"), from the package or the checkout."""
    for base in (PACKAGE_DIR, PACKAGE_DIR.parent):
        candidate = base / relative
        if candidate.exists():
            return candidate
    raise DigestError(f"digest is installed without {relative}; reinstall it (pip install digest)")


def sample_corpus_path() -> Path:
    """The bundled sample papers (built from saved listing pages by `digest import-listing`)."""
    return PACKAGE_DIR / "data" / "sample_papers.jsonl"
