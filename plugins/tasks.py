"""A built-in verifiable task: sort a short list of digits."""

from __future__ import annotations

import random
from pathlib import Path

from pydantic import Field

from reasonrl.core.registry import Params


class SortDigitsParams(Params):
    """Sort a short list of digits: a task with a checkable answer to prove the loop learns."""

    length: int = Field(4, gt=0, le=12)
    """digits per list"""
    max_digit: int = Field(9, ge=1, le=9)
    """largest digit drawn"""
    train_size: int = Field(2000, gt=0)
    """examples in the train split"""
    validation_size: int = Field(200, ge=0)
    """examples in the validation split"""
    test_size: int = Field(200, ge=0)
    """examples in the test split"""
    seed: int = 0
    """seed of the lists"""


class JsonlDatasetParams(Params):
    """JSON-lines files per split; relative paths resolve against the run folder."""

    files: dict[str, str] = Field(description="split -> file, e.g. {train: prepare/train.jsonl}")
    limit: int | None = Field(None, gt=0, description="keep the first N examples of each split")


def sort_prompt(digits: list[int]) -> str:
    return "".join(map(str, digits)) + ">"


class SortDigits:
    """Prompts like ``4713>``; the answer is ``1347``."""

    def __init__(self, params: SortDigitsParams) -> None:
        self.params = params

    def splits(self) -> dict[str, list[dict]]:
        p = self.params
        rng = random.Random(p.seed)
        sizes = {"train": p.train_size, "validation": p.validation_size, "test": p.test_size}
        out = {}
        for split, size in sizes.items():
            out[split] = []
            for _ in range(size):
                digits = [rng.randint(0, p.max_digit) for _ in range(p.length)]
                answer = "".join(map(str, sorted(digits)))
                out[split].append({"prompt": sort_prompt(digits), "completion": answer, "answer": answer})
        return out


class SortAccuracy:
    """Fraction of positions that match the sorted answer; extra or missing characters count as misses.

    >>> SortAccuracy(None)(["4713>"], ["1347"], [{"answer": "1347"}])
    [{'sort_accuracy': 1.0}]
    >>> SortAccuracy(None)(["4713>"], ["13"], [{"answer": "1347"}])
    [{'sort_accuracy': 0.5}]
    """

    def __init__(self, params=None) -> None:
        self.params = params

    def __call__(self, prompts, completions, examples):
        results = []
        for completion, example in zip(completions, examples):
            answer = example["answer"]
            text = completion.strip()
            hits = sum(a == b for a, b in zip(text, answer))
            results.append({"sort_accuracy": hits / max(len(answer), len(text))})
        return results


class JsonlDataset:
    """Examples from JSON-lines files, one per split (often an earlier stage's output)."""

    def __init__(self, params) -> None:
        self.params = params

    def splits(self) -> dict[str, list[dict]]:
        import json

        from reasonrl.core.contracts import current_run_dir
        from reasonrl.core.errors import ReasonRLError

        out = {}
        for split, name in self.params.files.items():
            path = Path(name)
            if not path.is_absolute() and current_run_dir() is not None:
                path = current_run_dir() / path
            if not path.exists():
                raise ReasonRLError(f"jsonl dataset: split {split!r} file {path} does not exist; run the stage "
                                    f"that writes it first or fix files.{split}")
            rows = []
            with open(path, encoding="utf-8") as handle:
                for number, line in enumerate(handle, 1):
                    if line.strip():
                        try:
                            rows.append(json.loads(line))
                        except json.JSONDecodeError as exc:
                            raise ReasonRLError(f"{path}:{number}: not JSON ({exc.msg})") from None
                    if self.params.limit and len(rows) >= self.params.limit:
                        break
            out[split] = rows
        return out
