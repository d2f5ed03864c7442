"""Params models of the GR2 pack (torch-free, so registration stays fast)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from reasonrl.core.config import ConstraintRef, DatasetRef, ItemTokenizerRef, RejectionFilterRef, TeacherRef
from reasonrl.plugins.params import SamplingParams


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


class ItemKNNParams(Params):
    window: int = Field(5, gt=0)
    recent: int = Field(10, ge=0)
    decay: float = Field(0.8, gt=0, le=1)
    popularity_weight: float = Field(1e-3, ge=0)


class GR2PrepareParams(Params):
    """Data, pre-ranker, semantic IDs, prompts and the mid-training corpus."""

    dataset: Literal["movielens_100k", "movielens_1m"] = "movielens_100k"
    path: str | None = Field(None, description="folder with ml-*.inter/.item instead of fetching")
    min_rating: float = 0.0
    k_core: int = Field(5, ge=1)
    candidates: int = Field(10, ge=2)
    history_items: int = Field(10, ge=1, description="most recent history items shown in a prompt")
    preranker: ItemKNNParams = Field(default_factory=ItemKNNParams)
    tokenizer: ItemTokenizerRef = Field(default_factory=lambda: ItemTokenizerRef(
        name="rq_kmeans", params={"levels": 4, "codebook_size": 64}))
    max_users: dict[str, int] = Field(default_factory=dict, description="cap per split, e.g. {train: 200, test: 100}")
    embedding_model_path: str | None = None
    train_targets_per_user: int = Field(1, ge=1, description=(
        "training examples per user: its last k training items each become a target (more SFT/RL data)"))
    corpus_windows: int = Field(3, ge=0, description="history->next examples per user in the mid-training corpus")
    seed: int = 0
    progress: bool = True


class CitesSidParams(Params):
    min_citations: int = Field(1, ge=1, description="distinct candidate or history SIDs the reasoning must cite")


class TasteTeacherParams(Params):
    temperature: float = Field(0.3, ge=0, description="Gumbel noise scale: 0 = always the same order")
    decay: float = Field(0.7, gt=0, le=1, description="weight of a history item per step back in time")
    era_weight: float = Field(0.3, ge=0)
    prior_weight: float = Field(0.3, ge=0, description="bonus for the upstream ranker's early positions")
    explained_items: int = Field(3, ge=1, description="candidates the reasoning discusses")
    seed: int = 0


class TeacherTracesParams(Params):
    """Teacher traces kept by rejection filters, written as weighted SFT data."""

    dataset: DatasetRef = Field(description="examples with prompt, teacher prompts, candidates, target_index")
    split: str = "train"
    teacher: TeacherRef
    filters: list[RejectionFilterRef] = Field(default_factory=lambda: [
        RejectionFilterRef(name="valid_format"), RejectionFilterRef(name="top1_match")])
    mode: Literal["rejection", "targeted"] = Field("rejection", description="targeted: the answer is in the prompt")
    max_rounds: int = Field(2, ge=1, description="retry budget: generation rounds per example")
    samples_per_round: int = Field(4, ge=1)
    batch_size: int = Field(8, gt=0, description="examples per teacher call")
    max_examples: int | None = Field(None, gt=0)
    lambda_reasoning: float = Field(0.5, ge=0, description="SFT weight of reasoning tokens (lambda_r)")
    lambda_ranking: float = Field(1.0, gt=0, description="SFT weight of the JSON ranking tokens (lambda_o)")
    progress: bool = True


class Variant(Params):
    name: str = Field(description="row label, e.g. 'RL, conditional reward'")
    stage: str | None = Field(None, description="the training stage whose model reranks; None = the pre-ranker order")
    chat_template: bool = False


class GR2EvaluateParams(Params):
    dataset: DatasetRef
    split: str = "test"
    variants: list[Variant] = Field(min_length=1)
    sampling: SamplingParams = Field(default_factory=lambda: SamplingParams(top_k=1, max_new_tokens=256))
    max_examples: int | None = Field(None, gt=0)
    bootstrap_samples: int = Field(1000, ge=10)
    title: str = "GR2 reranking"
    constraint: ConstraintRef | None = Field(None, description="a decoding constraint, e.g. sid_trie")
    trace_stages: list[str] = Field(default_factory=list, description="teacher_traces stages whose acceptance "
                                    "rate and tries per accepted trace the report shows")
    progress: bool = True
