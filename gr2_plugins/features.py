"""What a reranker can be shown about each candidate: evidence from the interaction logs.

Everything here is fit on sequences cut before the lists' targets (see
:func:`shifted_sequences`), so no statistic has seen the item it is asked to rank. The same
numbers feed the headroom benchmark's learned rankers, the ``feature_ranker`` teacher and the
optional evidence lines of the prompts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from reasonrl.core.io import atomic_write_bytes, atomic_write_json, read_json

FEATURES = ("position", "inv_position", "knn_score", "log_popularity", "log_recent_popularity",
            "log_after_last", "log_near_last", "log_near_recent", "after_last_share", "genre_overlap", "year_gap")
RECENT_DAYS = 28
"""'popular lately' means watched in the four weeks before the list's last history item"""


def shifted_sequences(sequences: Mapping[str, Sequence[str]], times: Mapping[str, Sequence[float]], cut: int):
    """Every user's sequence (and timestamps) without its last ``cut`` items: the data a
    statistic may see for lists whose target is the ``cut``-th item from the end. Cutting every
    user alike keeps a list's own target out of the counts without making its count special
    (removing one list's target alone would leave it at n - 1 where the others have n)."""
    kept = {u: list(seq[:-cut]) for u, seq in sequences.items()}
    stamps = {u: list(times.get(u) or range(len(sequences[u])))[:-cut] for u in sequences}
    return kept, stamps


@dataclass
class Evidence:
    """The facts about one candidate that an explanation can cite."""

    after_last: int          # viewers who watched it right after the list's last history item
    near_recent: int         # co-watchings within the window after the last few history items
    recent_views: int        # views in the RECENT_DAYS before the list's last history item
    views: int               # views overall


class SequenceStats:
    """Popularity (overall and recent) and directed co-watching counts of a set of sequences."""

    def __init__(self, window: int = 5, recent_items: int = 3, decay: float = 0.7) -> None:
        self.window, self.recent_items, self.decay = window, recent_items, decay

    def fit(self, sequences: Mapping[str, Sequence[str]], times: Mapping[str, Sequence[float]], catalog: Sequence[str],
            items: Mapping[str, Mapping] | None = None) -> "SequenceStats":
        self.items = list(catalog)
        self.index = {item: i for i, item in enumerate(self.items)}
        n = len(self.items)
        self.after = np.zeros((n, n), dtype=np.float32)
        self.near = np.zeros((n, n), dtype=np.float32)
        self.views = np.zeros(n, dtype=np.int64)
        stamps: list[list[float]] = [[] for _ in range(n)]
        for user, sequence in sequences.items():
            ids = np.array([self.index[i] for i in sequence if i in self.index], dtype=np.int64)
            np.add.at(self.views, ids, 1)
            for offset in range(1, self.window + 1):
                if len(ids) <= offset:
                    break
                np.add.at(self.near, (ids[:-offset], ids[offset:]), 1.0)
                if offset == 1:
                    np.add.at(self.after, (ids[:-1], ids[1:]), 1.0)
            for item, when in zip(sequence, times.get(user) or range(len(sequence))):
                if item in self.index:
                    stamps[self.index[item]].append(float(when))
        self.stamps = [np.sort(np.array(s)) for s in stamps]
        self.meta = {self.index[i]: items[i] for i in self.items if items and i in items}
        return self

    STATS_FILE, INDEX_FILE = "evidence_stats.safetensors", "evidence_stats.json"

    def save(self, folder: Path) -> None:
        """The counts behind :meth:`evidence` (sparse, safetensors) and the item order, so a
        served model is shown the evidence its evaluation showed."""
        from safetensors.numpy import save as to_bytes

        tensors = {"views": self.views, "stamps": np.concatenate(self.stamps + [np.zeros(0)]),
                   "stamp_offsets": np.cumsum([0] + [len(s) for s in self.stamps]).astype(np.int64)}
        for name in ("after", "near"):
            matrix = getattr(self, name)
            rows, cols = np.nonzero(matrix)
            tensors.update({f"{name}_rows": rows.astype(np.int64), f"{name}_cols": cols.astype(np.int64),
                            f"{name}_values": matrix[rows, cols]})
        atomic_write_bytes(Path(folder) / self.STATS_FILE, to_bytes(tensors))
        atomic_write_json(Path(folder) / self.INDEX_FILE, {"items": self.items, "window": self.window,
                                                          "recent_items": self.recent_items})

    @classmethod
    def load(cls, folder: Path) -> "SequenceStats":
        from safetensors.numpy import load_file

        index = read_json(Path(folder) / cls.INDEX_FILE)
        tensors = load_file(str(Path(folder) / cls.STATS_FILE))
        stats = cls(window=index["window"], recent_items=index["recent_items"])
        stats.items = index["items"]
        stats.index = {item: i for i, item in enumerate(stats.items)}
        n = len(stats.items)
        for name in ("after", "near"):
            matrix = np.zeros((n, n), dtype=np.float32)
            matrix[tensors[f"{name}_rows"], tensors[f"{name}_cols"]] = tensors[f"{name}_values"]
            setattr(stats, name, matrix)
        stats.views = tensors["views"]
        offsets = tensors["stamp_offsets"]
        stats.stamps = [tensors["stamps"][offsets[i]:offsets[i + 1]] for i in range(n)]
        stats.meta = {}
        return stats

    @property
    def last_time(self) -> float:
        return max((float(s[-1]) for s in self.stamps if len(s)), default=0.0)

    def recent_views(self, item: int, until: float) -> int:
        stamps = self.stamps[item]
        start = until - RECENT_DAYS * 86400
        return int(np.searchsorted(stamps, until, side="left") - np.searchsorted(stamps, start, side="left"))

    def evidence(self, history: Sequence[str], until: float, candidate: str) -> Evidence:
        seen = [self.index[i] for i in history if i in self.index]
        c = self.index[candidate]
        return Evidence(int(self.after[seen[-1], c]) if seen else 0,
                        int(sum(self.near[i, c] for i in seen[-self.recent_items:])),
                        self.recent_views(c, until), int(self.views[c]))

    def genre_scores(self, history: Sequence[str], candidates: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        weights: dict[str, float] = {}
        years = []
        for age, item in enumerate(reversed(history)):
            meta = self.meta.get(self.index.get(item, -1), {})
            for genre in meta.get("genres", ()):
                weights[genre] = weights.get(genre, 0.0) + self.decay ** age
            if str(meta.get("year", "")).isdigit():
                years.append(int(meta["year"]))
        total = sum(weights.values()) or 1.0
        era = sum(years) / len(years) if years else None
        overlap, gap = np.zeros(len(candidates)), np.zeros(len(candidates))
        for row, c in enumerate(candidates):
            meta = self.meta.get(c, {})
            overlap[row] = sum(weights.get(g, 0.0) for g in meta.get("genres", ())) / total
            year = str(meta.get("year", ""))
            gap[row] = abs(int(year) - era) / 10 if era is not None and year.isdigit() else 0.0
        return overlap, gap

    def features(self, history: Sequence[str], until: float, candidates: Sequence[str],
                 knn_scores: Sequence[float]) -> np.ndarray:
        """One row of :data:`FEATURES` per candidate, in the pre-ranker's order."""
        ids = np.array([self.index[c] for c in candidates], dtype=np.int64)
        seen = [self.index[i] for i in history if i in self.index]
        last = seen[-1] if seen else None
        after = self.after[last, ids] if last is not None else np.zeros(len(ids))
        near = self.near[last, ids] if last is not None else np.zeros(len(ids))
        near_recent = self.near[np.array(seen[-self.recent_items:], dtype=np.int64)][:, ids].sum(0) if seen \
            else np.zeros(len(ids))
        last_views = max(int(self.views[last]), 1) if last is not None else 1
        recent = np.array([self.recent_views(c, until) for c in ids])
        overlap, gap = self.genre_scores(history, ids)
        position = np.arange(len(ids), dtype=np.float64)
        return np.column_stack([
            position, 1.0 / (1.0 + position), np.asarray(knn_scores, dtype=np.float64),
            np.log1p(self.views[ids]), np.log1p(recent), np.log1p(after), np.log1p(near), np.log1p(near_recent),
            after / last_views, overlap, gap])

