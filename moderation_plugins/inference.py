"""Use a trained classifier: ``Classifier.from_run(run_dir).classify(texts, policy)`` and
``reasonrl classify RUN_DIR --policy FILE_OR_TASK < texts.jsonl``. Inference path only."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

from pydantic import BaseModel, ConfigDict, Field

from reasonrl.core.errors import ReasonRLError
from reasonrl.core.io import unicode_problem
from reasonrl.moderation_plugins.parsing import parse_verdict
from reasonrl.moderation_plugins.prompts import (
    BUILT_IN_POLICIES,
    classifier_prompt,
    load_policy_document,
    parse_policy,
    policy_labels,
)
from reasonrl.plugins.engine.manifest import DecodeSettings, choose_model, decode
from reasonrl.plugins.engine.models import add_inference_arguments


@dataclass
class Classification:
    """What ``Classifier.classify`` answers for one text."""

    reasoning: str
    label: str | None
    probability: float | None
    error: str | None


class Classifier:
    def __init__(self, model, tokenizer, max_new_tokens: int | None = None, chat_template: bool = True,
                 settings=None) -> None:
        """``settings``: a DecodeSettings as the run's evaluation decoded this model (it then decides
        the chat template); ``max_new_tokens`` overrides its answer length."""

        self.model, self.tokenizer = model.eval(), tokenizer
        settings = settings or DecodeSettings(stage="?", chat_template=chat_template)
        self.settings = settings if max_new_tokens is None else settings.model_copy(
            update={"max_new_tokens": max_new_tokens})
        self.why = ""

    @classmethod
    def from_run(cls, run_dir: str | Path, stage: str | None = None, device: str | None = None, dtype: str = "auto",
                 **kwargs) -> "Classifier":
        """The asked stage, else the best variant of the run's evaluation, decoded as evaluated."""
        from reasonrl.plugins.engine.models import load_trained

        settings, why = choose_model(Path(run_dir), stage)
        classifier = cls(*load_trained(Path(run_dir), settings.stage, device, dtype), settings=settings, **kwargs)
        classifier.why = why
        return classifier

    def classify(self, texts: Sequence[str], policy: str) -> list[Classification]:
        """Verdicts for ``texts`` under a policy file or built-in task name."""
        meta, policy_text = load_policy_document(policy)
        policy_labels(meta, policy)
        return self.classify_with(texts, meta, policy_text)

    def classify_with(self, texts: Sequence[str], meta: dict, policy_text: str) -> list[Classification]:
        """Verdicts under an already loaded policy (front matter with ``labels``, body text)."""
        labels = meta["labels"]
        problems = [unicode_problem(text) if isinstance(text, str) else "not a string" for text in texts]
        good = [i for i, problem in enumerate(problems) if problem is None]
        prompts = [classifier_prompt(policy_text, texts[i], labels) for i in good]
        answers = dict(zip(good, decode(self.model, self.tokenizer, prompts, self.settings) if prompts else []))
        # a text that cannot be encoded is answered with its error; the others are still classified
        return [Classification(**asdict(parse_verdict(answers[i], labels))) if i in answers else
                Classification("", None, None, f"text {i}: {problems[i]}") for i in range(len(texts))]


class ClassifyCommand:
    """``reasonrl classify RUN_DIR --policy FILE_OR_TASK < texts.jsonl`` -> one JSON verdict per line."""

    def __init__(self, params=None) -> None:
        self.params = params

    def add_arguments(self, parser) -> None:
        parser.add_argument("run_dir")
        parser.add_argument("--policy", required=True, help="a policy file, or a built-in task name")
        parser.add_argument("--stage", help="which training stage's model (default: the best variant of the "
                                            "run's evaluation report, else the newest)")
        parser.add_argument("--max-new-tokens", type=int, default=None, help="default: what the evaluation used")
        add_inference_arguments(parser)

    def run(self, args) -> int:
        classifier = Classifier.from_run(args.run_dir, args.stage, device=args.device, dtype=args.dtype,
                                         max_new_tokens=args.max_new_tokens)
        print(f"model: stage {classifier.settings.stage!r} ({classifier.why}); decoding as "
              f"{classifier.settings.origin}", file=sys.stderr)
        lines = [(number, line) for number, line in enumerate(sys.stdin, 1) if line.strip()]
        read = [read_text_line(number, line) for number, line in lines]
        texts = [text for text, error in read if error is None]
        verdicts = iter(classifier.classify(texts, args.policy))
        for (number, _), (text, error) in zip(lines, read):
            row = {"line": number, "text": text, "reasoning": "", "label": None, "probability": None, "error": error} \
                if error is not None else {"line": number, "text": text, **asdict(next(verdicts))}
            print(json.dumps(row, ensure_ascii=error is not None), flush=True)
        bad = sum(error is not None for _, error in read)
        if bad:
            print(f"{bad} of {len(lines)} lines could not be classified (bad input; see their error)", file=sys.stderr)
        return 1 if bad else 0


def read_text_line(number: int, line: str) -> tuple[str | None, str | None]:
    """(text, error) of one stdin line: ``{"text": ...}`` or a bare JSON string."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        return None, f"stdin line {number}: not JSON ({exc.msg}); send {{\"text\": ...}} per line"
    text = record.get("text") if isinstance(record, dict) else record
    if not isinstance(text, str):
        return None, f"stdin line {number}: no \"text\" string; send {{\"text\": ...}} per line"
    problem = unicode_problem(text)
    return (text, None) if problem is None else (text, f"stdin line {number}: {problem}")


MAX_TEXTS = 64


class ClassifyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str | None = None
    texts: list[str] = Field(min_length=1, max_length=MAX_TEXTS)
    policy: str | None = Field(None, description="a built-in task name or a policy file the server was started with")
    policy_text: str | None = Field(None, description="a whole policy document, front matter with labels first")


class ClassifyEndpoint:
    """Verdicts (reasoning, label, probability) for texts under a policy, as ``reasonrl classify`` gives them."""

    request_model = ClassifyRequest

    def __init__(self, params=None) -> None:
        self.params = params

    def prepare(self, served, request: ClassifyRequest):
        meta, text, name = resolve_policy(request, served.options.policies)
        return (name, text), (request.texts, meta, text, name)

    def run_batch(self, served, key, payloads) -> list[dict]:
        """Requests under one policy: one ``Classifier`` call over all their texts, split back."""
        classifier = served.shared("classifier", lambda: Classifier(served.model, served.tokenizer,
                                                                    settings=served.settings))
        _, meta, text, name = payloads[0]
        verdicts = classifier.classify_with([t for p in payloads for t in p[0]], meta, text)
        out, start = [], 0
        for texts, *_ in payloads:
            results = [asdict(v) for v in verdicts[start:start + len(texts)]]
            out.append({"model": served.name, "policy": name, "labels": meta["labels"], "results": results})
            start += len(texts)
        return out


def resolve_policy(request: ClassifyRequest, allowed: Sequence[str]) -> tuple[dict, str, str]:
    """(front matter, text, name): a built-in task, a policy file the server was started with
    (by path or file stem), or a document in the request. Other server files are never read."""

    if (request.policy is None) == (request.policy_text is None):
        raise ReasonRLError("give exactly one of policy (a name) and policy_text (a policy document)")
    if request.policy_text is not None:
        meta, text = parse_policy(request.policy_text)
        name = "(inline)"
    else:
        by_name = {Path(p).stem: p for p in allowed} | {p: p for p in allowed}
        if request.policy not in by_name and request.policy not in BUILT_IN_POLICIES:
            known = sorted(set(BUILT_IN_POLICIES) | {Path(p).stem for p in allowed})
            raise ReasonRLError(f"unknown policy {request.policy!r}; this server knows {known} (start it with "
                                f"--policy FILE, or send policy_text)")
        name = request.policy
        meta, text = load_policy_document(by_name.get(name, name))
    policy_labels(meta, name)
    return meta, text, name
