"""Registers the generic built-in components. Imports no torch: factories are lazy."""

from __future__ import annotations

from reasonrl.core.hookspecs import hookimpl
from reasonrl.plugins.engine.threads import share_cores, thread_settings

P = "reasonrl.plugins"


@hookimpl
def register_trackers(register):
    register("jsonl", f"{P}.tracking.trackers:JsonlTracker", params=f"{P}.tracking.trackers:JsonlParams", summary="metrics as JSON lines in the run folder")
    register("tensorboard", f"{P}.tracking.trackers:TensorboardTracker", params=f"{P}.tracking.trackers:TensorboardParams",
             summary="metrics as TensorBoard scalars (extra: tensorboard)")
    register("wandb", f"{P}.tracking.trackers:WandbTracker", params=f"{P}.tracking.trackers:WandbParams",
             summary="Weights & Biases runs (optional: pip install wandb)")
    register("mlflow", f"{P}.tracking.trackers:MlflowTracker", params=f"{P}.tracking.trackers:MlflowParams",
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
    register("sort_accuracy", f"{P}.data.tasks:SortAccuracy", summary="fraction of positions equal to the sorted answer")


@hookimpl
def register_policy_optimizers(register):
    register("grpo", f"{P}.engine.optimizers:grpo", params=f"{P}.engine.optimizers:GRPOParams",
             summary="group-normalised advantages, clipped ratio, optional KL (k1/k3)")
    register("dr_grpo", f"{P}.engine.optimizers:dr_grpo", params=f"{P}.engine.optimizers:DrGRPOParams",
             summary="GRPO without std scaling and per-sequence length normalisation")
    register("dapo", f"{P}.engine.optimizers:dapo", params=f"{P}.engine.optimizers:DAPOParams",
             summary="clip-higher, token-level loss, dynamic sampling, truncation mask")
    register("ppo", f"{P}.engine.optimizers:PPO", params=f"{P}.engine.optimizers:PPOParams",
             summary="value head, GAE, clipped policy and value losses")


@hookimpl
def register_rollout_engines(register):
    register("hf", f"{P}.engine.rollout:HFRolloutEngine", params=f"{P}.engine.rollout:SamplingParams",
             summary="transformers sampling with KV cache, one prefill per prompt group")
    register("vllm", f"{P}.engine.vllm_engine:VLLMRolloutEngine", params=f"{P}.engine.vllm_engine:VLLMParams",
             summary="colocated vLLM sampling, weights pushed each step (extra: vllm, GPU)")


@hookimpl
def register_stages(register):
    register("rl", f"{P}.engine.rl:RLStage", params=f"{P}.engine.rl:RLParams",
             summary="on-policy RL: rollouts, rewards, combiner, filter, optimizer")
    register("sft", f"{P}.engine.supervised:SFTStage", params=f"{P}.engine.supervised:SFTParams",
             summary="supervised fine-tuning with per-segment loss weights")
    register("lm", f"{P}.engine.supervised:LMStage", params=f"{P}.engine.supervised:LMParams",
             summary="causal LM training with sequence packing (mid-training)")


@hookimpl
def register_datasets(register):
    register("sort_digits", f"{P}.data.tasks:SortDigits", params=f"{P}.data.tasks:SortDigitsParams",
             summary="toy verifiable task: sort a short list of digits")
    register("jsonl", f"{P}.data.tasks:JsonlDataset", params=f"{P}.data.tasks:JsonlDatasetParams",
             summary="JSON-lines files per split, paths relative to the run folder")
    register("hf_dataset", f"{P}.data.hf_dataset:HFDataset", params=f"{P}.data.hf_dataset:HFDatasetParams",
             summary="your CSV / JSON / Parquet files or a Hub id via datasets.load_dataset, columns mapped")


@hookimpl
def register_teacher_generators(register):
    register("hf", f"{P}.teachers:HFTeacher", params=f"{P}.teachers:HFTeacherParams",
             summary="a local transformers model, n samples per prompt (default: packaged SmolLM2-135M-Instruct)")
    register("openai_compatible", f"{P}.teachers:OpenAICompatibleTeacher", params=f"{P}.teachers:OpenAITeacherParams",
             summary="any OpenAI-compatible endpoint: key from env, retries, concurrency, disk cache")


@hookimpl
def register_commands(register):
    register("serve", f"{P}.serving.serve:ServeCommand",
             summary="an OpenAI-compatible server over a trained run: chat, classify, rerank (FastAPI + uvicorn)")
    register("export", f"{P}.serving.export:ExportCommand",
             summary="a trained stage as a plain transformers folder with a model card; optional Hub push")


@hookimpl
def run_starting(config, echo):
    share_cores(config, echo)


@hookimpl
def run_facts():
    return {"threads": thread_settings()}
