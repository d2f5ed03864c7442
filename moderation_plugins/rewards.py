"""Moderation rewards over parsed verdicts; every example carries ``label`` and ``labels``."""

from __future__ import annotations

import math

from pydantic import Field

from reasonrl.core.config import JudgeRef
from reasonrl.core.errors import ReasonRLError, StopTraining
from reasonrl.core.manager import get_registry
from reasonrl.core.registry import Params
from reasonrl.moderation_plugins.metrics import reasoning_grounding
from reasonrl.moderation_plugins.parsing import parse_verdict
from reasonrl.moderation_plugins.prompts import load_policy_document
from reasonrl.plugins.rewards import word_count_penalty


class ReasoningLengthParams(Params):
    min_words: int = Field(15, ge=0, description="reasoning shorter than this is penalised (length collapse)")
    max_words: int = Field(200, gt=0)
    """reasoning longer than this many words is penalised"""
    penalty: float = Field(1.0, ge=0)
    """the penalty at its largest (the component is minus this)"""


DEFAULT_CRITERIA = [
    "Does the reasoning apply a rule or definition from the policy?",
    "Is everything the reasoning says about the content actually in the content (nothing made up)?",
    "Does the reasoning support the label the moderator chose?",
]


class RubricJudgeParams(Params):
    judge: JudgeRef = Field(default_factory=lambda: JudgeRef(name="hf"))
    """the judge that answers the rubric questions"""
    criteria: list[str] = Field(default_factory=lambda: list(DEFAULT_CRITERIA), min_length=1,
                                description="yes/no rubric questions; the reward is the mean P(yes)")
    include_policy: bool = Field(True, description="show the judge the policy (longer prompts)")
    max_content_chars: int = Field(600, gt=0)
    """content shown to the judge is cut to this many characters"""


class LabelAccuracy:
    """Verifiable: 1 if the parsed label equals the gold label, else 0 (unparseable included)."""

    def __init__(self, params=None) -> None:
        self.params = params

    def __call__(self, prompts, completions, examples):
        return [{"label_accuracy": float(parse_verdict(c, e["labels"]).label == e["label"])}
                for c, e in zip(completions, examples)]


class BalancedLabelParams(Params):
    class_shares: dict[str, float] | None = Field(None, description=(
        "each label's share of the prompts trained on; default: the shares of the gold labels seen so far "
        "(with stratified draws these are equal, and every weight is 1)"))


class BalancedLabelAccuracy:
    """``label_balanced``: a correct label earns 1 / (K x share of its class), a wrong or missing
    one 0. Answering one label for everything then earns 1/K on average whichever label it is,
    so the majority label is no longer the easy optimum that plain accuracy makes it. Only
    with an optimizer that keeps reward scale across groups (``dr_grpo``): all rollouts of a
    group share one gold label, and ``dapo``/``grpo`` divide each group by its std, which
    cancels the weight; with those, draw prompts ``stratified`` instead."""

    def __init__(self, params: BalancedLabelParams | None = None) -> None:
        self.params = params or BalancedLabelParams()
        self.seen: dict[str, float] = {}

    def shares(self, examples) -> dict[str, float]:
        if self.params.class_shares:
            return self.params.class_shares
        for example in examples:
            for label in example["labels"]:
                self.seen.setdefault(label, 1.0)  # one pseudo-count each: no label starts at share 0
            self.seen[example["label"]] += 1.0
        total = sum(self.seen.values())
        return {label: count / total for label, count in self.seen.items()}

    def __call__(self, prompts, completions, examples):
        shares = self.shares(examples)
        out = []
        for completion, example in zip(completions, examples):
            gold = example["label"]
            right = parse_verdict(completion, example["labels"]).label == gold
            out.append({"label_balanced": 1.0 / (len(example["labels"]) * shares[gold]) if right else 0.0})
        return out


class VerdictLabelsParams(Params):
    stop_if_constant: bool = True
    """stop the rl stage when every rollout of its first check_steps steps gives the same answer (one label, or none)"""
    check_steps: int = Field(2, gt=0)
    """how many first steps the check pools (more rollouts: fewer false alarms on a confident policy)"""
    max_label_share: float | None = Field(None, gt=0, le=1, description=(
        "collapse guard: when one label takes more than this share of the rollouts for collapse_steps steps in a "
        "row, the stage stops and keeps the policy from before that run of steps (None: off; the recipes use 0.8)"))
    collapse_steps: int = Field(3, gt=0)
    """consecutive steps above max_label_share that count as a collapse"""


class VerdictLabels:
    """Not a reward: which label each answer gave (``label=<name>`` 1/0, ``label=none`` when
    none parsed). Logged with the rl stage's ``metrics``, the per-step shares show a policy
    collapsing onto one label long before accuracy says so; ``label_entropy`` (bits) sums
    them up, and a starting policy that answers one label for everything stops the stage."""

    def __init__(self, params: VerdictLabelsParams | None = None) -> None:
        self.params = params or VerdictLabelsParams()
        self.answers_at_start: set[str] = set()
        self.streak = 0
        # the rl stage keeps this many earlier policies to fall back on
        self.guard_window = self.params.collapse_steps if self.params.max_label_share else 0

    def __call__(self, prompts, completions, examples):
        out = []
        for completion, example in zip(completions, examples):
            label = parse_verdict(completion, example["labels"]).label
            out.append({f"label={name}": float(label == name) for name in example["labels"]}
                       | {"label=none": float(label is None)})
        return out

    def summarize(self, means: dict[str, float], step: int) -> dict[str, float]:
        """Batch-level metrics from the step's shares; raises on a constant starting policy."""
        shares = {k: v for k, v in means.items() if k.startswith("label=") and v > 0}
        entropy = -sum(v * math.log2(v) for v in shares.values())
        if step <= self.params.check_steps:
            self.answers_at_start |= set(shares)
            if step == self.params.check_steps and self.params.stop_if_constant and len(self.answers_at_start) == 1:
                self.stop(next(iter(self.answers_at_start)))
        top = max(shares.items(), key=lambda kv: kv[1], default=("label=none", 0.0))
        self.guard(step, *top)
        return {"label_entropy": entropy, "top_label_share": top[1]}

    def guard(self, step: int, answer: str, share: float) -> None:
        """The collapse guard: past ``check_steps``, ``collapse_steps`` steps in a row with one
        answer above ``max_label_share`` stop the stage, back to the policy before them."""
        limit = self.params.max_label_share
        if limit is None or step <= self.params.check_steps:
            return
        self.streak = self.streak + 1 if share > limit else 0
        if self.streak >= self.params.collapse_steps:
            raise StopTraining(f"verdict_labels: {answer} took more than {limit:.0%} of the rollouts for "
                               f"{self.streak} steps in a row (step {step}: {share:.0%}); the policy is collapsing "
                               f"onto one answer", restore_steps_back=self.streak)

    def stop(self, answer: str) -> None:
        steps = self.params.check_steps
        raise ReasonRLError(
            f"verdict_labels: every rollout of the first {steps} rl step(s) answers {answer}: the starting policy "
            f"gives one answer for everything, so each group's rewards are equal and RL has nothing to learn from. "
            f"Fix: start from a moderation_warm_start stage (class-balanced, picked by validation macro-F1), raise "
            f"the rollout temperature, or set verdict_labels' stop_if_constant: false to train anyway.")


class ReasoningGrounding:
    """Not a reward by default (rl: ``metrics``): a stated proxy for made-up reasons, from the
    reasoning before the label: ``grounded_words``, the share of its substantive words found in
    the prompt, and ``cites_content``, 1 when it uses a word only the content has; also
    ``reasoning_words``, to follow length collapse step by step."""

    def __init__(self, params=None) -> None:
        self.params = params

    def __call__(self, prompts, completions, examples):
        out = []
        for prompt, completion, example in zip(prompts, completions, examples):
            reasoning = parse_verdict(completion, example["labels"]).reasoning
            out.append({**reasoning_grounding(reasoning, example.get("content", ""), example.get("prompt", prompt)),
                        "reasoning_words": float(len(reasoning.split()))})
        return out


class VerdictFormat:
    """1 when the answer has reasoning, a known label and a probability in [0, 1]."""

    def __init__(self, params=None) -> None:
        self.params = params

    def __call__(self, prompts, completions, examples):
        out = []
        for completion, example in zip(completions, examples):
            parsed = parse_verdict(completion, example["labels"])
            out.append({"format": float(parsed.error is None and bool(parsed.reasoning))})
        return out


class ReasoningLength:
    """0 inside [min_words, max_words] of reasoning; -penalty * relative shortfall or excess outside."""

    def __init__(self, params) -> None:
        self.params = params

    def __call__(self, prompts, completions, examples):
        p = self.params
        return [{"length": word_count_penalty(len(parse_verdict(c, e["labels"]).reasoning.split()), p.min_words,
                                              p.max_words, p.penalty, max_excess=1.0)}
                for c, e in zip(completions, examples)]


def judge_prompt(criterion: str, example: dict, reasoning: str, label: str | None, policy: str | None,
                 max_content_chars: int) -> str:
    parts = ["You check a content moderator's reasoning. Answer with one word: yes or no."]
    if policy:
        parts.append(f"Policy:\n{policy}")
    parts += [f"Content:\n<<<\n{example['content'][:max_content_chars]}\n>>>",
              f"Moderator's reasoning: {reasoning or '(none)'}", f"Moderator's label: {label or '(none)'}",
              f"Question: {criterion}"]
    return "\n\n".join(parts)


class RubricJudge:
    """LLM-as-judge: mean P(yes) over the rubric's questions; 0 without parseable reasoning."""

    def __init__(self, params, judge=None) -> None:
        self.params = params
        self._judge = judge

    def judge(self):
        if self._judge is None:

            self._judge = get_registry().build("judges", self.params.judge.name, self.params.judge.params)
        return self._judge

    def __call__(self, prompts, completions, examples):
        p = self.params
        asks, owners = [], []
        for index, (completion, example) in enumerate(zip(completions, examples)):
            parsed = parse_verdict(completion, example["labels"])
            if not parsed.reasoning:
                continue
            policy = load_policy_document(example.get("policy") or example["task"])[1] if p.include_policy else None
            for criterion in p.criteria:
                asks.append(judge_prompt(criterion, example, parsed.reasoning, parsed.label, policy,
                                         p.max_content_chars))
                owners.append(index)
        scores = [0.0] * len(completions)
        for owner, p_yes in zip(owners, self.judge().probability_yes(asks) if asks else []):
            scores[owner] += p_yes / len(p.criteria)
        return [{"rubric": s} for s in scores]
