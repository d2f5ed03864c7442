"""Scores from the model itself: the probability of each label where the verdict names it.

A stated ``Probability:`` line is text the policy learned to write (SFT fixes it per label,
RL can make it contradict the label), so ROC-AUC over it measures a template. Here the trace
is cut at its last ``Label:`` (or given one where it has none) and the model's next-token
distribution over the labels' first tokens is the score.
"""

from __future__ import annotations

from typing import Sequence

LABEL_KEY = "Label:"


def verdict_prefix(text: str) -> str:
    """The trace up to and including its last ``Label:``, or the trace with one appended."""
    at = text.rfind(LABEL_KEY)
    return text[: at + len(LABEL_KEY)] if at >= 0 else text.rstrip() + "\n" + LABEL_KEY


def first_label_tokens(tokenizer, labels: Sequence[str]) -> list[int] | None:
    """Each label's first token as written after ``Label:`` (with its space); None when two share one."""
    first = [tokenizer(" " + label, add_special_tokens=False)["input_ids"][0] for label in labels]
    return first if len(set(first)) == len(first) else None


def label_probabilities(model, tokenizer, prompts: Sequence[str], texts: Sequence[str], labels: Sequence[str],
                        batch_size: int = 8) -> list[list[float]] | None:
    """Per example, the model's probability of each label (softmax over their first tokens)
    after the trace's verdict key; ``prompts`` are already formatted (chat template applied).
    None when the labels' first tokens coincide, so the tokens cannot tell them apart."""
    import torch

    first = first_label_tokens(tokenizer, labels)
    if first is None:
        return None
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    out: list[list[float]] = []
    model.eval()
    for start in range(0, len(texts), batch_size):
        ids = [tokenizer(p + verdict_prefix(t), add_special_tokens=False)["input_ids"]
               for p, t in zip(prompts[start:start + batch_size], texts[start:start + batch_size])]
        width = max(map(len, ids))
        batch = torch.tensor([row + [pad] * (width - len(row)) for row in ids], device=device)
        mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in ids], device=device)
        with torch.no_grad():
            logits = model(input_ids=batch, attention_mask=mask).logits
        last = torch.tensor([len(row) - 1 for row in ids], device=device)
        chosen = logits[torch.arange(len(ids), device=device), last][:, first].float()
        out += chosen.softmax(-1).tolist()
    return out
