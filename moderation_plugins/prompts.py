"""Policy documents and the classifier prompt (instructions + policy + content)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Sequence

import yaml

from reasonrl.core.errors import ReasonRLError


BUILT_IN_POLICIES = ("spam_email", "harmful_response", "risk_area", "prompt_injection")


def load_policy_document(task_or_path: str) -> tuple[dict, str]:
    """(front matter, text) of a built-in policy by task name, or of a user's policy file."""
    path = Path(task_or_path)
    if path.suffix in (".md", ".txt") and path.exists():
        return parse_policy(path.read_text(encoding="utf-8"))
    built_in = resources.files("reasonrl.moderation_plugins") / "policies" / f"{task_or_path}.md"
    if not built_in.is_file():
        raise ReasonRLError(f"policy {task_or_path!r}: neither a policy file nor a built-in task policy "
                            f"({', '.join(BUILT_IN_POLICIES)})")
    return parse_policy(built_in.read_text(encoding="utf-8"))


def parse_policy(text: str) -> tuple[dict, str]:
    """(front matter, body) of a policy document; the front matter is YAML between '---' lines."""
    meta: dict = {}
    if text.startswith("---"):
        parts = text.split("---", 2)
        if len(parts) < 3:
            raise ReasonRLError("the policy's front matter starts with '---' but never ends with another '---' line")
        _, header, text = parts
        meta = yaml.safe_load(header) or {}
        if not isinstance(meta, dict):
            raise ReasonRLError(f"the policy's front matter is not a mapping of keys (got {type(meta).__name__})")
    return meta, text.strip()


def policy_labels(meta: dict, name: str) -> list[str]:
    """The labels a policy's front matter lists (two or more; the last is the positive one)."""
    labels = meta.get("labels")
    if not isinstance(labels, list) or len(labels) < 2:
        raise ReasonRLError(f"policy {name!r} has no 'labels:' list of two or more labels in its front matter; add "
                            f"e.g. 'labels: [allowed, violating]' between '---' lines at its top (the last label "
                            f"is the positive one)")
    return [str(label) for label in labels]


def classifier_prompt(policy_text: str, content: str, labels: Sequence[str], reflect: bool = False) -> str:
    steps = ("First reason in a few sentences about which parts of the policy apply to the content. "
             + ("Then reflect: could the opposite label be right? " if reflect else ""))
    return (f"You enforce this policy.\n\n{policy_text}\n\nContent:\n<<<\n{content}\n>>>\n\n{steps}"
            f"Finish with two lines: 'Label: <one of {', '.join(labels)}>' and 'Probability: <0 to 1 that the "
            f"label is {labels[-1]}>'.")


def sft_completion(label: str, labels: Sequence[str]) -> str:
    """The SFT baseline's target: the gold label with a one-line rationale and a confident probability.

    The datasets carry no human rationales, so SFT learns the label and the format only; RL
    is what shapes the reasoning.
    """
    probability = 0.9 if label == labels[-1] else 0.1
    return f"The policy's definitions point to {label}.\nLabel: {label}\nProbability: {probability}"
