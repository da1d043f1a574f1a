"""Where the domain fixtures live and which dataset reads which folder (shared by the tests)."""

from __future__ import annotations

from pathlib import Path

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "domains"

# dataset -> fixture folder holding its original files
SOURCES = {
    "mind": "mind",
    "steam": "steam",
    "amazon-beauty": "amazon",
    "amazon-fashion": "amazon",
    "amazon-office": "amazon",
    "amazon-grocery": "amazon",
    "goodreads": "goodreads",
    "lastfm": "lastfm",
    "kuairec": "kuairec",
    "mobilerec": "mobilerec",
}
