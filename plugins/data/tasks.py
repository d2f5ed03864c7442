"""A built-in verifiable task: sort a short list of digits."""

from __future__ import annotations

import random
from pathlib import Path

from pydantic import Field

from reasonrl.core.contracts import current_run_dir
from reasonrl.core.errors import ReasonRLError
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
    max_row_bytes: int = Field(8_000_000, gt=0, description=(
        "a longer line is an error naming it, found before it is read whole (one huge row would otherwise "
        "hold gigabytes while it is parsed and tokenized)"))


def sort_prompt(digits: list[int]) -> str:
    return "".join(map(str, digits)) + ">"


class SortDigits:
    """Prompts like ``4713>``; the answer is ``1347``."""

    card = ("generated digit lists", "none: synthetic")  # (description, licence) for model cards

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


def read_jsonl_rows(path: Path, limit: int | None, max_row_bytes: int) -> list[dict]:
    """The rows of a JSON-lines file; a line over ``max_row_bytes`` or not JSON is an error naming it."""
    import json

    rows = []
    with open(path, "rb") as handle:
        number = 0
        while line := handle.readline(max_row_bytes + 1):
            number += 1
            if len(line) > max_row_bytes and not line.endswith(b"\n"):
                raise ReasonRLError(f"{path}:{number}: a row longer than max_row_bytes ({max_row_bytes} bytes); "
                                    f"shorten or drop it, or raise max_row_bytes in the dataset's params")
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line.decode("utf-8")))
            except UnicodeDecodeError as exc:
                raise ReasonRLError(f"{path}:{number}: not UTF-8 (byte {exc.start}); save the file as UTF-8") from None
            except json.JSONDecodeError as exc:
                raise ReasonRLError(f"{path}:{number}: not JSON ({exc.msg})") from None
            if limit and len(rows) >= limit:
                break
    return rows


class JsonlDataset:
    """Examples from JSON-lines files, one per split (often an earlier stage's output)."""

    def __init__(self, params) -> None:
        self.params = params

    def splits(self) -> dict[str, list[dict]]:
        out = {}
        for split, name in self.params.files.items():
            path = Path(name)
            if not path.is_absolute() and current_run_dir() is not None:
                path = current_run_dir() / path
            if not path.exists():
                raise ReasonRLError(f"jsonl dataset: split {split!r} file {path} does not exist; run the stage "
                                    f"that writes it first or fix files.{split}")
            out[split] = read_jsonl_rows(path, self.params.limit, self.params.max_row_bytes)
        return out
