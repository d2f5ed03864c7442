"""Params models of the generic built-ins, kept free of torch so that registration
and config validation stay fast. Defaults follow ../shared/REFERENCE.md."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------- trackers
class JsonlParams(Params):
    filename: str = "metrics.jsonl"


class TensorboardParams(Params):
    subdir: str = "tensorboard"


# ---------------------------------------------------------------- reward combiners
class WeightedSumParams(Params):
    weights: dict[str, float] = Field(default_factory=dict, description="component -> weight; unnamed components weigh 1")
    default_weight: float = 1.0
