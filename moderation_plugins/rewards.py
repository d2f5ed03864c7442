"""Moderation rewards over parsed verdicts; every example carries ``label`` and ``labels``."""

from __future__ import annotations

from reasonrl.moderation_plugins.parsing import parse_verdict


class LabelAccuracy:
    """Verifiable: 1 if the parsed label equals the gold label, else 0 (unparseable included)."""

    def __init__(self, params=None) -> None:
        self.params = params

    def __call__(self, prompts, completions, examples):
        return [{"label_accuracy": float(parse_verdict(c, e["labels"]).label == e["label"])}
                for c, e in zip(completions, examples)]


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
        out = []
        for completion, example in zip(completions, examples):
            words = len(parse_verdict(completion, example["labels"]).reasoning.split())
            if words < p.min_words:
                value = -p.penalty * (p.min_words - words) / max(p.min_words, 1)
            elif words > p.max_words:
                value = -p.penalty * min(1.0, (words - p.max_words) / p.max_words)
            else:
                value = 0.0
            out.append({"length": value})
        return out
