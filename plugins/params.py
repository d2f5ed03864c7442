"""Params models of the generic built-ins, kept free of torch so that registration
and config validation stay fast. Defaults follow ../shared/REFERENCE.md."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from reasonrl.core.config import CombinerRef, ConstraintRef, DatasetRef, OptimizerRef, RewardRef, RolloutEngineRef


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
    required: list[str] = Field(default_factory=list, description="components that must apply; else invalid_reward")
    invalid_reward: float = -1.0


# ---------------------------------------------------------------- policy optimizers
class GRPOParams(Params):
    epsilon: float = Field(0.2, gt=0, description="clip range: ratio kept in [1 - eps, 1 + eps]")
    beta: float = Field(0.0, ge=0, description="KL weight to a frozen reference; 0 loads no reference")
    kl_estimator: str = Field("k3", pattern="^(k1|k3)$")
    scale_rewards: bool = True
    std_eps: float = 1e-6


class DrGRPOParams(Params):
    epsilon: float = Field(0.2, gt=0)
    beta: float = Field(0.0, ge=0)
    kl_estimator: str = Field("k3", pattern="^(k1|k3)$")
    max_completion_length: int = Field(256, gt=0, description="the constant that replaces per-sequence length")


class DAPOParams(Params):
    epsilon_low: float = Field(0.2, gt=0)
    epsilon_high: float = Field(0.28, gt=0)
    dynamic_sampling: bool = True
    mask_truncated: bool = False
    std_eps: float = 1e-6


class PPOParams(Params):
    epsilon: float = Field(0.2, gt=0)
    value_clip: float = Field(0.2, gt=0)
    gamma: float = Field(1.0, ge=0, le=1)
    lam: float = Field(0.95, ge=0, le=1)
    value_coef: float = Field(0.5, ge=0)
    whiten_advantages: bool = True


# ---------------------------------------------------------------- rollout engines
class SamplingParams(Params):
    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(0, ge=0, description="0 = no top-k cut")
    max_new_tokens: int = Field(64, gt=0)
    stop_strings: list[str] = Field(default_factory=list)
    prompt_batch_size: int = Field(8, gt=0, description="prompts prefilled together")


class VLLMParams(SamplingParams):
    gpu_memory_utilization: float = Field(0.3, gt=0, le=1)
    dtype: str = "bfloat16"


# ---------------------------------------------------------------- models
class TinyModelParams(Params):
    """A randomly initialised small Llama over a character vocabulary (tests, toy tasks)."""

    alphabet: str = "0123456789 ,:>=+-[]abcdefghijklmnopqrstuvwxyz"
    hidden_size: int = Field(64, gt=0)
    num_layers: int = Field(2, gt=0)
    num_heads: int = Field(4, gt=0)
    intermediate_size: int = Field(128, gt=0)
    max_positions: int = Field(256, gt=0)
    tokenizer: str | None = Field(None, description="use this packaged model's tokenizer instead of characters")
    tokenizer_corpus: list[str] = Field(default_factory=list, description=(
        "train a byte-level BPE tokenizer on these JSONL/text files (relative to the run folder) instead: "
        "tiny models are ~15x faster with a ~2k vocabulary than with a 49k one"))
    vocab_size: int = Field(2048, ge=300, description="BPE vocabulary size with tokenizer_corpus")


class LoraParams(Params):
    r: int = Field(8, gt=0)
    alpha: int = Field(16, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])


class ModelSpec(Params):
    """Where the policy comes from: ``tiny`` | ``packaged`` (a model shipped in a registry
    package, e.g. ``smollm2-135m-instruct``) | ``hf`` (local folder or hub name) |
    ``gguf`` (a GGUF file, dequantized) | ``stage`` (the model an earlier stage saved)."""

    source: Literal["tiny", "packaged", "hf", "gguf", "stage"] = "tiny"
    name: str | None = None
    path: str | None = None
    gguf_file: str | None = None
    stage: str | None = None
    tiny: TinyModelParams = Field(default_factory=TinyModelParams)
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    lora: LoraParams | None = None
    add_tokens: str | None = Field(None, description="file with one new token per line (relative to the run folder "
                                   "or absolute); embeddings of new tokens start at the mean of the old ones")

    @model_validator(mode="after")
    def _check_source(self):
        needed = {"hf": "path", "gguf": "gguf_file", "stage": "stage", "packaged": "name"}.get(self.source)
        if needed and getattr(self, needed) is None:
            raise ValueError(f"model source {self.source!r} needs {needed}=...")
        return self


# ---------------------------------------------------------------- trainers (stages)
class DeepSpeedParams(Params):
    """DeepSpeed ZeRO through accelerate (extra: deepspeed)."""

    zero_stage: Literal[1, 2, 3] = 2
    offload_optimizer: bool = False


class TrainingParams(Params):
    """What every trainer shares: optimisation, schedule, checkpoints."""

    model: ModelSpec = Field(default_factory=ModelSpec)
    dataset: DatasetRef
    split: str = "train"
    lr: float = Field(1e-5, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    schedule: Literal["constant", "linear", "cosine"] = "constant"
    warmup_steps: int = Field(0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    gradient_accumulation: int = Field(1, gt=0)
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    deepspeed: DeepSpeedParams | None = Field(None, description="ZeRO sharding; sft and lm stages")
    checkpoint_every: int = Field(0, ge=0, description="steps between resume checkpoints; 0 = none")
    save_model: bool = Field(True, description="save the trained model (off only for benchmarks)")
    seed_offset: int = 0
    progress: bool = True


class LMParams(TrainingParams):
    text_field: str = "text"
    seq_len: int = Field(128, gt=1)
    batch_size: int = Field(8, gt=0)
    steps: int = Field(100, gt=0)


class SFTParams(TrainingParams):
    prompt_field: str = "prompt"
    completion_field: str = "completion"
    segments_field: str = Field("segments", description="optional per-example [[text, weight], ...] completion")
    chat_template: bool = Field(False, description="wrap prompts with the tokenizer's chat template")
    max_length: int = Field(512, gt=1)
    batch_size: int = Field(8, gt=0)
    epochs: float = Field(1.0, gt=0)


class RLParams(TrainingParams):
    prompt_field: str = "prompt"
    chat_template: bool = False
    optimizer: OptimizerRef = Field(default_factory=lambda: OptimizerRef(name="dapo"))
    rollout: RolloutEngineRef = Field(default_factory=lambda: RolloutEngineRef(name="hf"))
    rewards: list[RewardRef] = Field(min_length=1)
    combiner: CombinerRef = Field(default_factory=lambda: CombinerRef(name="weighted_sum"))
    constraint: ConstraintRef | None = Field(None, description=(
        "a decoding constraint for rollouts (e.g. sid_trie); the old log-prob stays the policy's own"))
    on_reward_error: Literal["raise", "invalid"] = "raise"
    invalid_reward: float = -1.0
    steps: int = Field(50, gt=0)
    prompts_per_step: int = Field(8, gt=0)
    group_size: int = Field(8, gt=0)
    max_sampling_rounds: int = Field(3, ge=1, description="generation rounds allowed to fill a batch under dynamic sampling")
    updates_per_batch: int = Field(1, gt=0)
    micro_batch_prompts: int = Field(4, gt=0)
    eval_every: int = Field(0, ge=0)
    eval_split: str = "validation"
    eval_prompts: int = Field(32, gt=0)


# ---------------------------------------------------------------- built-in toy task
class SortDigitsParams(Params):
    """Sort a short list of digits: a task with a checkable answer to prove the loop learns."""

    length: int = Field(4, gt=0, le=12)
    max_digit: int = Field(9, ge=1, le=9)
    train_size: int = Field(2000, gt=0)
    validation_size: int = Field(200, ge=0)
    test_size: int = Field(200, ge=0)
    seed: int = 0


# ---------------------------------------------------------------- generic rewards
class RegexFormatParams(Params):
    pattern: str = Field(description="Python regex the whole completion must match (re.fullmatch, DOTALL)")
    name: str = "format"


class JsonFormatParams(Params):
    required_keys: list[str] = Field(default_factory=list)
    json_schema: dict | None = Field(None, description="a JSON Schema the object must satisfy (needs jsonschema)")
    name: str = "format"


class OverlongParams(Params):
    """DAPO overlong shaping on the completion length (characters or words)."""

    max_length: int = Field(gt=0, description="L_max")
    cache_length: int = Field(gt=0, description="L_cache: the soft band below L_max")
    unit: Literal["chars", "words"] = "chars"
    name: str = "overlong"


class LengthPenaltyParams(Params):
    min_length: int = Field(0, ge=0)
    max_length: int = Field(10_000, gt=0)
    penalty: float = Field(1.0, ge=0, description="reward -penalty * relative distance outside [min, max]")
    name: str = "length"


class WandbParams(Params):
    project: str = "reasonrl"
    entity: str | None = None
    mode: Literal["online", "offline", "disabled"] = "offline"


class MlflowParams(Params):
    tracking_uri: str | None = Field(None, description="default: ./mlruns in the run folder")
    experiment: str = "reasonrl"


class JsonlDatasetParams(Params):
    """JSON-lines files per split; relative paths resolve against the run folder."""

    files: dict[str, str] = Field(description="split -> file, e.g. {train: prepare/train.jsonl}")
    limit: int | None = Field(None, gt=0, description="keep the first N examples of each split")


# ---------------------------------------------------------------- teachers and filters
class HFTeacherParams(Params):
    model: ModelSpec = Field(default_factory=lambda: ModelSpec(source="packaged", name="smollm2-135m-instruct"))
    sampling: SamplingParams = Field(default_factory=lambda: SamplingParams(max_new_tokens=192, temperature=0.8,
                                                                            top_p=0.95))
    chat_template: bool = True
    system: str | None = None
    seed: int = 0


class OpenAITeacherParams(Params):
    """Any OpenAI-compatible chat endpoint (vLLM's server, hosted APIs)."""

    base_url: str = Field(description="e.g. http://127.0.0.1:8000/v1")
    model: str
    api_key_env: str | None = Field("OPENAI_API_KEY", description="environment variable holding the key; never logged")
    temperature: float = Field(0.8, ge=0)
    max_tokens: int = Field(512, gt=0)
    system: str | None = None
    max_concurrency: int = Field(4, gt=0)
    retries: int = Field(4, ge=0)
    backoff_seconds: float = Field(1.0, ge=0)
    timeout_seconds: float = Field(120.0, gt=0)
    cache_dir: str | None = Field(None, description="default: <REASONRL_CACHE>/teacher")
