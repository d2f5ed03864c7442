"""Pre-rankers that hand GR2 its top-10 candidate lists, trained on the training split only.

``item_knn``: item-to-item cosine similarity of co-occurrence within a window of each
user's sequence, scored from the user's most recent items with a recency decay, plus a
small popularity prior that breaks ties and covers cold items.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from reasonrl.core.registry import Params


class ItemKNNParams(Params):
    window: int = Field(5, gt=0)
    """co-occurrence window: items at most this far apart in a sequence count as neighbours"""
    recent: int = Field(10, ge=0)
    """most recent history items that vote for neighbours"""
    decay: float = Field(0.8, gt=0, le=1)
    """weight multiplier per step back in the history (recent items count more)"""
    popularity_weight: float = Field(1e-3, ge=0)
    """weight of item popularity added to the kNN score (breaks cold ties)"""


class ItemKNN:
    def __init__(self, window: int = 5, recent: int = 10, decay: float = 0.8, popularity_weight: float = 1e-3):
        self.window, self.recent, self.decay, self.popularity_weight = window, recent, decay, popularity_weight

    def fit(self, sequences: list[list[str]], catalog: list[str]) -> "ItemKNN":
        self.items = list(catalog)
        self.index = {item: i for i, item in enumerate(self.items)}
        n = len(self.items)
        co = np.zeros((n, n), dtype=np.float32)
        counts = np.zeros(n, dtype=np.float32)
        for seq in sequences:
            ids = [self.index[i] for i in seq if i in self.index]
            for pos, a in enumerate(ids):
                counts[a] += 1
                for offset in range(1, self.window + 1):
                    if pos + offset >= len(ids):
                        break
                    b = ids[pos + offset]
                    weight = 1.0 / offset
                    co[a, b] += weight
                    co[b, a] += weight
        norm = np.sqrt(np.maximum(counts, 1.0))
        self.similarity = co / norm[:, None] / norm[None, :]
        np.fill_diagonal(self.similarity, 0.0)
        self.popularity = counts / max(counts.max(), 1.0)
        return self

    def scores(self, history: list[str]) -> np.ndarray:
        ids = [self.index[i] for i in history if i in self.index]
        scores = self.popularity_weight * self.popularity.copy()
        for age, item in enumerate(reversed(ids[-self.recent:])):
            scores += (self.decay ** age) * self.similarity[item]
        scores[ids] = -np.inf  # never recommend what the user already has
        return scores

    def top_k(self, history: list[str], k: int = 10) -> list[str]:
        scores = self.scores(history)
        order = np.argsort(-scores, kind="stable")[:k]
        return [self.items[i] for i in order]
