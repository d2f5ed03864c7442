"""The ``teacher_traces`` stage: sample teacher traces, keep those every filter accepts."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from reasonrl.core.config import DatasetRef, RejectionFilterRef, TeacherRef
from reasonrl.core.contracts import StageContext
from reasonrl.core.errors import ReasonRLError
from reasonrl.core.io import atomic_write_json, atomic_write_jsonl
from reasonrl.core.registry import Params
from reasonrl.gr2_plugins.prompts import split_trace
from reasonrl.plugins.teachers import sample_until_accepted


class TeacherTracesParams(Params):
    """Teacher traces kept by rejection filters, written as weighted SFT data."""

    dataset: DatasetRef = Field(description="examples with prompt, teacher prompts, candidates, target_index")
    split: str = "train"
    """the dataset split whose prompts the teacher answers"""
    teacher: TeacherRef
    """the teacher generator that writes the traces"""
    filters: list[RejectionFilterRef] = Field(default_factory=lambda: [
        RejectionFilterRef(name="valid_format"), RejectionFilterRef(name="top1_match")])
    """rejection filters a trace must pass to be kept"""
    mode: Literal["rejection", "targeted"] = Field("rejection", description="targeted: the answer is in the prompt")
    max_rounds: int = Field(2, ge=1, description="retry budget: generation rounds per example")
    samples_per_round: int = Field(4, ge=1)
    """teacher samples per example in each round"""
    batch_size: int = Field(8, gt=0, description="examples per teacher call")
    max_examples: int | None = Field(None, gt=0)
    """the teacher answers the first N examples of the split (default: all)"""
    keep: int | None = Field(None, gt=0, description="keep the first N accepted traces, in example order (equal SFT "
                             "set sizes when comparing modes)")
    lambda_reasoning: float = Field(0.5, ge=0, description="SFT weight of reasoning tokens (lambda_r)")
    lambda_ranking: float = Field(1.0, gt=0, description="SFT weight of the JSON ranking tokens (lambda_o)")
    progress: bool = True
    """show progress bars"""


def sft_record(example: dict, trace: str, lambda_reasoning: float, lambda_ranking: float) -> dict:
    parts = split_trace(trace)
    # a trace without a JSON answer (kept only when no filter asks for one) is all reasoning
    segments = [[parts[0].strip() + "\n", lambda_reasoning], [parts[1], lambda_ranking]] if parts else \
        [[trace, lambda_reasoning]]
    # ``answer``: the ranking alone, for an answer-only (no reasoning) SFT from the same traces
    return {"prompt": example["prompt"], "segments": segments, "answer": parts[1] if parts else None,
            "user": example.get("user"), "target_index": example["target_index"], "candidates": example["candidates"]}


class TeacherTraces:
    """Rejection sampling (the teacher never sees the answer) or targeted sampling (it does)."""

    def __init__(self, params: TeacherTracesParams) -> None:
        self.params = params

    def run(self, context: StageContext) -> dict[str, Any]:
        from tqdm.auto import tqdm

        p = self.params
        examples = context.build(p.dataset).splits()[p.split][: p.max_examples]
        teacher = context.build(p.teacher)
        filters = [context.build(ref) for ref in p.filters]
        prompt_key = "teacher_prompt_targeted" if p.mode == "targeted" else "teacher_prompt"
        prompts = [example[prompt_key] for example in examples]
        bar = tqdm(total=len(examples) * p.max_rounds, desc=f"teacher[{p.mode}]", disable=not p.progress)
        sampled = sample_until_accepted(teacher, prompts, examples, filters, p.max_rounds, p.samples_per_round,
                                        p.batch_size, bar)
        accepted, tries, reasons = sampled.accepted, sampled.tries, sampled.reasons
        bar.close()
        if not accepted:
            raise ReasonRLError(
                f"stage {context.stage_id!r}: the teacher had no trace accepted for {len(examples)} examples "
                f"({sum(tries.values())} samples; rejections: {dict(reasons)}). Use a stronger teacher (e.g. "
                f"openai_compatible against a served model), more rounds, or longer max_new_tokens.")
        kept = sorted(accepted)[:p.keep]
        if p.keep and len(kept) < p.keep:
            print(f"    {context.stage_id}: keep={p.keep} asked, {len(kept)} traces accepted; keeping all "
                  f"(raise max_examples or max_rounds for more)")
        records = [sft_record(examples[i], accepted[i], p.lambda_reasoning, p.lambda_ranking) for i in kept]
        atomic_write_jsonl(context.stage_dir / "sft.jsonl", records)
        summary = {
            "mode": p.mode, "examples": len(examples), "accepted": len(accepted), "kept": len(records),
            "acceptance_rate": len(accepted) / max(len(examples), 1),
            "tries_per_accepted": sum(tries[i] for i in accepted) / max(len(accepted), 1),
            "samples_drawn": sum(tries.values()), "rejections": dict(reasons),
        }
        atomic_write_json(context.stage_dir / "summary.json", summary)
        return summary
