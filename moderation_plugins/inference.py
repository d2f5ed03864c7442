"""Use a trained classifier: ``Classifier.from_run(run_dir).classify(texts, policy)`` and
``reasonrl classify RUN_DIR --policy FILE_OR_TASK < texts.jsonl``. Inference path only."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

from reasonrl.core.errors import ReasonRLError
from reasonrl.moderation_plugins.parsing import parse_verdict
from reasonrl.moderation_plugins.prompts import classifier_prompt, load_policy_document
from reasonrl.plugins.models import add_inference_arguments


@dataclass
class Classification:
    """What ``Classifier.classify`` answers for one text."""

    reasoning: str
    label: str | None
    probability: float | None
    error: str | None


class Classifier:
    def __init__(self, model, tokenizer, max_new_tokens: int = 256, chat_template: bool = True) -> None:
        self.model, self.tokenizer = model.eval(), tokenizer
        self.max_new_tokens, self.chat_template = max_new_tokens, chat_template

    @classmethod
    def from_run(cls, run_dir: str | Path, stage: str | None = None, device: str | None = None, dtype: str = "auto",
                 **kwargs) -> "Classifier":
        from reasonrl.plugins.models import load_trained

        return cls(*load_trained(Path(run_dir), stage, device, dtype), **kwargs)

    def classify(self, texts: Sequence[str], policy: str) -> list[Classification]:
        """Verdicts for ``texts`` under a policy file or built-in task name."""
        meta, policy_text = load_policy_document(policy)
        if not meta.get("labels"):
            raise ReasonRLError(f"policy {policy!r} has no 'labels:' in its front matter")
        return self.classify_with(texts, meta, policy_text)

    def classify_with(self, texts: Sequence[str], meta: dict, policy_text: str) -> list[Classification]:
        """Verdicts under an already loaded policy (front matter with ``labels``, body text)."""
        from reasonrl.plugins.evaluation import greedy_texts
        from reasonrl.plugins.models import chat_prompt

        labels = meta["labels"]
        prompts = [chat_prompt(self.tokenizer, classifier_prompt(policy_text, text, labels), self.chat_template)
                   for text in texts]
        texts = greedy_texts(self.model, self.tokenizer, prompts, self.max_new_tokens)
        return [Classification(**asdict(parse_verdict(text, labels))) for text in texts]


class ClassifyCommand:
    """``reasonrl classify RUN_DIR --policy FILE_OR_TASK < texts.jsonl`` -> one JSON verdict per line."""

    def __init__(self, params=None) -> None:
        self.params = params

    def add_arguments(self, parser) -> None:
        parser.add_argument("run_dir")
        parser.add_argument("--policy", required=True, help="a policy file, or a built-in task name")
        parser.add_argument("--stage", help="which training stage's model (default: the newest)")
        parser.add_argument("--max-new-tokens", type=int, default=256)
        add_inference_arguments(parser)

    def run(self, args) -> int:
        classifier = Classifier.from_run(args.run_dir, args.stage, device=args.device, dtype=args.dtype,
                                         max_new_tokens=args.max_new_tokens)
        texts = []
        for number, line in enumerate(sys.stdin, 1):
            if line.strip():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ReasonRLError(f"stdin line {number}: not JSON ({exc.msg}); send {{\"text\": ...}} per line")
                texts.append(record["text"] if isinstance(record, dict) else str(record))
        for text, verdict in zip(texts, classifier.classify(texts, args.policy)):
            print(json.dumps({"text": text, **asdict(verdict)}, ensure_ascii=False), flush=True)
        return 0
