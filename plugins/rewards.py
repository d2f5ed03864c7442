"""Generic reward functions and the weighted-sum combiner (pure Python, no torch)."""

from __future__ import annotations

from typing import Mapping

from reasonrl.plugins.params import WeightedSumParams


class WeightedSum:
    """sum(weight[c] * value[c]) over components whose value is not None.

    >>> WeightedSum(WeightedSumParams(weights={"rank": 1.0, "format": 0.2})).combine({"rank": 0.3, "format": 1.0, "x": None})
    0.5
    """

    def __init__(self, params: WeightedSumParams) -> None:
        self.params = params

    def combine(self, components: Mapping[str, float | None]) -> float:
        total = 0.0
        for name, value in components.items():
            if value is not None:
                total += self.params.weights.get(name, self.params.default_weight) * value
        return total
