"""Registers the generic built-in components. Imports no torch: factories are lazy."""

from __future__ import annotations

from reasonrl.core.hookspecs import hookimpl

P = "reasonrl.plugins"


@hookimpl
def register_trackers(register):
    register("jsonl", f"{P}.trackers:JsonlTracker", params=f"{P}.trackers:JsonlParams", summary="metrics as JSON lines in the run folder")
    register("tensorboard", f"{P}.trackers:TensorboardTracker", params=f"{P}.trackers:TensorboardParams",
             summary="metrics as TensorBoard scalars (extra: tensorboard)")
    register("wandb", f"{P}.trackers:WandbTracker", params=f"{P}.trackers:WandbParams",
             summary="Weights & Biases runs (optional: pip install wandb)")
    register("mlflow", f"{P}.trackers:MlflowTracker", params=f"{P}.trackers:MlflowParams",
             summary="MLflow runs (optional: pip install mlflow)")


@hookimpl
def register_reward_combiners(register):
    register("weighted_sum", f"{P}.rewards:WeightedSum", params=f"{P}.rewards:WeightedSumParams",
             summary="sum of weight * component over the components that apply")


@hookimpl
def register_reward_functions(register):
    register("regex_format", f"{P}.rewards:RegexFormat", params=f"{P}.rewards:RegexFormatParams",
             summary="1 if the completion matches a regex, else 0")
    register("json_format", f"{P}.rewards:JsonFormat", params=f"{P}.rewards:JsonFormatParams",
             summary="1 if the completion holds a JSON object with the required keys")
    register("overlong", f"{P}.rewards:Overlong", params=f"{P}.rewards:OverlongParams",
             summary="DAPO overlong shaping: 0, linear penalty in the cache band, -1 beyond")
    register("length_penalty", f"{P}.rewards:LengthPenalty", params=f"{P}.rewards:LengthPenaltyParams",
             summary="penalty for completions outside [min, max] words")
    register("sort_accuracy", f"{P}.tasks:SortAccuracy", summary="fraction of positions equal to the sorted answer")


@hookimpl
def register_policy_optimizers(register):
    register("grpo", f"{P}.optimizers:grpo", params=f"{P}.optimizers:GRPOParams",
             summary="group-normalised advantages, clipped ratio, optional KL (k1/k3)")
    register("dr_grpo", f"{P}.optimizers:dr_grpo", params=f"{P}.optimizers:DrGRPOParams",
             summary="GRPO without std scaling and per-sequence length normalisation")
    register("dapo", f"{P}.optimizers:dapo", params=f"{P}.optimizers:DAPOParams",
             summary="clip-higher, token-level loss, dynamic sampling, truncation mask")
    register("ppo", f"{P}.optimizers:PPO", params=f"{P}.optimizers:PPOParams",
             summary="value head, GAE, clipped policy and value losses")


@hookimpl
def register_rollout_engines(register):
    register("hf", f"{P}.rollout:HFRolloutEngine", params=f"{P}.rollout:SamplingParams",
             summary="transformers sampling with KV cache, one prefill per prompt group")
    register("vllm", f"{P}.vllm_engine:VLLMRolloutEngine", params=f"{P}.vllm_engine:VLLMParams",
             summary="colocated vLLM sampling, weights pushed each step (extra: vllm, GPU)")


@hookimpl
def register_stages(register):
    register("rl", f"{P}.rl:RLStage", params=f"{P}.rl:RLParams",
             summary="on-policy RL: rollouts, rewards, combiner, filter, optimizer")
    register("sft", f"{P}.supervised:SFTStage", params=f"{P}.supervised:SFTParams",
             summary="supervised fine-tuning with per-segment loss weights")
    register("lm", f"{P}.supervised:LMStage", params=f"{P}.supervised:LMParams",
             summary="causal LM training with sequence packing (mid-training)")


@hookimpl
def register_datasets(register):
    register("sort_digits", f"{P}.tasks:SortDigits", params=f"{P}.tasks:SortDigitsParams",
             summary="toy verifiable task: sort a short list of digits")
    register("jsonl", f"{P}.tasks:JsonlDataset", params=f"{P}.tasks:JsonlDatasetParams",
             summary="JSON-lines files per split, paths relative to the run folder")
    register("hf_dataset", f"{P}.hf_dataset:HFDataset", params=f"{P}.hf_dataset:HFDatasetParams",
             summary="your CSV / JSON / Parquet files or a Hub id via datasets.load_dataset, columns mapped")


@hookimpl
def register_teacher_generators(register):
    register("hf", f"{P}.teachers:HFTeacher", params=f"{P}.teachers:HFTeacherParams",
             summary="a local transformers model, n samples per prompt (default: packaged SmolLM2-135M-Instruct)")
    register("openai_compatible", f"{P}.teachers:OpenAICompatibleTeacher", params=f"{P}.teachers:OpenAITeacherParams",
             summary="any OpenAI-compatible endpoint: key from env, retries, concurrency, disk cache")


@hookimpl
def register_commands(register):
    register("serve", f"{P}.serve:ServeCommand",
             summary="an OpenAI-compatible server over a trained run: chat, classify, rerank (FastAPI + uvicorn)")
    register("export", f"{P}.export:ExportCommand",
             summary="a trained stage as a plain transformers folder with a model card; optional Hub push")
