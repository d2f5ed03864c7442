"""Params models of the moderation pack (torch-free)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from reasonrl.core.config import DatasetRef, JudgeRef
from reasonrl.plugins.params import ModelSpec, OpenAITeacherParams, SamplingParams


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModerationDataParams(Params):
    path: str | None = Field(None, description="folder with the task's files instead of fetching the package")
    validation_fraction: float = Field(0.15, ge=0, lt=1)
    test_fraction: float = Field(0.2, gt=0, lt=1)
    max_chars: int = Field(1200, gt=100, description="content longer than this is cut (head and tail kept)")
    policy: str | None = Field(None, description="policy file (.md/.txt with front matter) or built-in task name; "
                               "default: the task's own policy")
    reflect: bool = Field(False, description="ask the model to weigh the opposite label before answering")
    max_train: int | None = Field(None, gt=0, description="keep the first N training examples (data ladders)")
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


class HFJudgeParams(Params):
    model: ModelSpec = Field(default_factory=lambda: ModelSpec(source="packaged", name="smollm2-135m-instruct"))
    chat_template: bool = True
    batch_size: int = Field(8, gt=0)


class OpenAIJudgeParams(OpenAITeacherParams):
    top_logprobs: int = Field(5, ge=1, le=20)
    temperature: float = 0.0
    max_tokens: int = 1


DEFAULT_CRITERIA = [
    "Does the reasoning apply a rule or definition from the policy?",
    "Is everything the reasoning says about the content actually in the content (nothing made up)?",
    "Does the reasoning support the label the moderator chose?",
]


class RubricJudgeParams(Params):
    judge: JudgeRef = Field(default_factory=lambda: JudgeRef(name="hf"))
    criteria: list[str] = Field(default_factory=lambda: list(DEFAULT_CRITERIA), min_length=1,
                                description="yes/no rubric questions; the reward is the mean P(yes)")
    include_policy: bool = Field(True, description="show the judge the policy (longer prompts)")
    max_content_chars: int = Field(600, gt=0)


class EvalVariant(Params):
    name: str = Field(description="row label, e.g. 'RL (dapo, label + rubric)'")
    stage: str | None = Field(None, description="the training stage whose model classifies")
    model: ModelSpec | None = Field(None, description="or any model, e.g. the untrained packaged student")
    baseline_stage: str | None = Field(None, description="or a tfidf_baseline stage whose test numbers to show")
    chat_template: bool = True

    @model_validator(mode="after")
    def _one_source(self):
        if sum(x is not None for x in (self.stage, self.model, self.baseline_stage)) != 1:
            raise ValueError(f"variant {self.name!r}: give exactly one of stage, model, baseline_stage")
        return self


class ModerationEvalParams(Params):
    dataset: DatasetRef
    split: str = "test"
    variants: list[EvalVariant] = Field(min_length=1)
    sampling: SamplingParams = Field(default_factory=lambda: SamplingParams(top_k=1, max_new_tokens=96))
    mc_samples: int = Field(1, ge=1, description="k sampled traces per example, probability averaged "
                            "(use temperature > 0 and top_k 0 in sampling)")
    max_examples: int | None = Field(None, gt=0)
    title: str = "Moderation"
    progress: bool = True


class StudyParams(Params):
    """A ladder of child sft/rl runs, each evaluated; sigmoid fit and data-efficiency summary."""

    dataset: DatasetRef
    model: ModelSpec = Field(default_factory=lambda: ModelSpec(source="packaged", name="smollm2-135m-instruct"),
                             description="the student every point starts from (and the R0 score)")
    axis: Literal["examples", "rollouts", "steps"] = "examples"
    values: list[int] = Field(min_length=1, description="the ladder, e.g. [32, 64, 128, 256]")
    recipes: list[Literal["rl", "sft"]] = Field(default_factory=lambda: ["rl", "sft"])
    rl: dict[str, Any] = Field(default_factory=dict, description="an rl stage's params (dataset and model filled in)")
    sft: dict[str, Any] = Field(default_factory=dict, description="an sft stage's params (dataset and model filled in)")
    eval_split: str = Field("validation", description="the test split is kept for final reports, not ladders")
    eval_examples: int | None = Field(None, gt=0)
    metric: str = "accuracy"
    sampling: SamplingParams = Field(default_factory=lambda: SamplingParams(top_k=1, max_new_tokens=48))
    chat_template: bool = True
    match_tolerance: float = Field(0.01, ge=0, description="RL 'matches' SFT's best within this margin")
    title: str = "Moderation study"
    progress: bool = True

    @model_validator(mode="after")
    def _axis_fits_recipes(self):
        if self.axis != "examples" and "sft" in self.recipes:
            raise ValueError(f"axis {self.axis!r} is an RL knob; use recipes: [rl] (sft only ladders examples)")
        return self
