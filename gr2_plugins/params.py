"""Params models of the GR2 pack (torch-free, so registration stays fast)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ConditionalRankParams(Params):
    alpha: float = Field(0.2, ge=0, description="weight of the format bonus")
    invalid_reward: float = -1.0
    count_kept_first: bool = Field(True, description="a target already first and kept first also earns the bonus")


class TopKParams(Params):
    k: int = Field(3, gt=0)


class SemanticIdParams(Params):
    levels: int = Field(4, ge=1, le=8)
    codebook_size: int | list[int] = Field(256, description="one size for every level, or one per level")
    iterations: int = Field(20, gt=0)
    max_fit_samples: int = Field(100_000, gt=0, description="k-means centroids are fitted on a sample this big")
    collision: str = Field("nearest_free", pattern="^(none|nearest_free|random_free)$",
                           description="re-assign colliding items to free last-level codes under their prefix")
    dedup_token: bool = Field(False, description="append one more code that numbers items still colliding")
    seed: int = 0

    def sizes(self) -> list[int]:
        sizes = self.codebook_size if isinstance(self.codebook_size, list) else [self.codebook_size] * self.levels
        if len(sizes) != self.levels:
            raise ValueError(f"codebook_size lists {len(sizes)} sizes for {self.levels} levels")
        return sizes


class RQVAEParams(SemanticIdParams):
    latent_dim: int = Field(32, gt=0)
    hidden_dim: int = Field(256, gt=0)
    epochs: int = Field(200, gt=0)
    batch_size: int = Field(1024, gt=0)
    lr: float = Field(1e-3, gt=0)
    ema_decay: float = Field(0.99, gt=0, lt=1)
    commitment: float = Field(0.25, ge=0)
