"""The ``moderation_traces`` stage: teacher reasoning for moderation SFT, kept by rejection filters.

It writes ``sft.jsonl``: the examples it kept, each with the teacher's trace as its
``completion`` and as weighted ``segments`` (reasoning, then the verdict lines), ready for the
``sft`` stage or ``moderation_warm_start`` through the ``jsonl`` dataset.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Literal

from pydantic import Field

from reasonrl.core.config import DatasetRef, RejectionFilterRef, TeacherRef
from reasonrl.core.contracts import StageContext, Verdict
from reasonrl.core.errors import ReasonRLError
from reasonrl.core.io import atomic_write_json, atomic_write_jsonl
from reasonrl.core.registry import Params
from reasonrl.moderation_plugins.metrics import reasoning_grounding
from reasonrl.moderation_plugins.parsing import LABEL, parse_verdict
from reasonrl.moderation_plugins.rationales import teacher_prompt
from reasonrl.plugins.teachers import sample_until_accepted


class ModerationTracesParams(Params):
    """Teacher traces for moderation examples, kept by rejection filters, written as SFT data."""

    dataset: DatasetRef = Field(description="a moderation task (its examples carry prompt, label, labels, content)")
    split: str = "train"
    """the dataset split whose examples the teacher explains"""
    teacher: TeacherRef = Field(default_factory=lambda: TeacherRef(name="policy_rationale"))
    """the teacher generator: policy_rationale (rule-based) or any served model (openai_compatible)"""
    filters: list[RejectionFilterRef] = Field(default_factory=lambda: [
        RejectionFilterRef(name="label_matches"), RejectionFilterRef(name="cites_content")])
    """rejection filters a trace must pass to be kept"""
    mode: Literal["targeted", "rejection"] = Field("targeted", description=(
        "targeted: the teacher is told the gold label and explains it; rejection: it is not, and label_matches "
        "keeps the traces that reach the gold label"))
    max_rounds: int = Field(2, ge=1, description="generation rounds per example")
    samples_per_round: int = Field(2, ge=1, description="teacher samples per example in each round")
    batch_size: int = Field(8, gt=0, description="examples per teacher call")
    max_examples: int | None = Field(None, gt=0, description="the first N examples of the split (default: all)")
    lambda_reasoning: float = Field(0.5, ge=0, description="SFT weight of the reasoning tokens")
    lambda_verdict: float = Field(1.0, gt=0, description="SFT weight of the verdict lines")
    progress: bool = True
    """show a progress bar"""


class LabelMatches:
    """The trace ends with a parseable verdict whose label is the example's gold label."""

    def __init__(self, params=None) -> None:
        self.params = params

    def check(self, example, completion: str) -> Verdict:
        parsed = parse_verdict(completion, example["labels"])
        if parsed.error:
            return Verdict(False, parsed.error)
        return Verdict(parsed.label == example["label"], "wrong_label")


class CitesContent:
    """The reasoning uses a word the content has and the rest of the prompt does not."""

    def __init__(self, params=None) -> None:
        self.params = params

    def check(self, example, completion: str) -> Verdict:
        reasoning = parse_verdict(completion, example["labels"]).reasoning
        cites = reasoning_grounding(reasoning, example["content"], example["prompt"])["cites_content"]
        return Verdict(bool(cites), "does_not_cite_content")


def sft_row(example: dict, trace: str, lambda_reasoning: float, lambda_verdict: float) -> dict:
    """The example with the trace as its completion, split into reasoning and verdict segments."""
    verdict_at = [m.start() for m in LABEL.finditer(trace)][-1]  # kept traces always parse
    reasoning, verdict = trace[:verdict_at], trace[verdict_at:]
    segments = [[reasoning, lambda_reasoning], [verdict, lambda_verdict]] if reasoning.strip() else \
        [[trace, lambda_verdict]]
    return {**example, "completion": trace, "segments": segments}


class ModerationTraces:
    """Targeted (the teacher sees the label) or rejection sampling of moderation traces."""

    def __init__(self, params: ModerationTracesParams) -> None:
        self.params = params

    def run(self, context: StageContext) -> dict[str, Any]:
        from tqdm.auto import tqdm

        p = self.params
        examples = context.build(p.dataset).splits()[p.split][: p.max_examples]
        teacher, filters = context.build(p.teacher), [context.build(ref) for ref in p.filters]
        prompts = [teacher_prompt(example, p.mode == "targeted") for example in examples]
        with tqdm(total=len(examples) * p.max_rounds, desc=f"teacher[{p.mode}]", disable=not p.progress) as bar:
            sampled = sample_until_accepted(teacher, prompts, examples, filters, p.max_rounds, p.samples_per_round,
                                            p.batch_size, bar)
        accepted, tries, reasons = sampled.accepted, sampled.tries, sampled.reasons
        if not accepted:
            raise ReasonRLError(
                f"stage {context.stage_id!r}: no trace was kept for {len(examples)} examples (rejections: "
                f"{dict(reasons)}); use a stronger teacher, mode: targeted, or more rounds")
        rows = [sft_row(examples[i], accepted[i], p.lambda_reasoning, p.lambda_verdict) for i in sorted(accepted)]
        atomic_write_jsonl(context.stage_dir / "sft.jsonl", rows)
        summary = {"mode": p.mode, "examples": len(examples), "kept": len(rows),
                   "acceptance_rate": len(rows) / max(len(examples), 1),
                   "tries_per_kept": sum(tries[i] for i in accepted) / len(accepted),
                   "rejections": dict(reasons), "labels_kept": dict(Counter(row["label"] for row in rows)),
                   "labels_asked": dict(Counter(example["label"] for example in examples))}
        atomic_write_json(context.stage_dir / "summary.json", summary)
        return summary
