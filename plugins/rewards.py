"""Generic reward functions and the weighted-sum combiner (pure Python, no torch)."""

from __future__ import annotations

import json
import re
from typing import Literal, Mapping

from pydantic import Field

from reasonrl.core.errors import ReasonRLError
from reasonrl.core.registry import Params


class WeightedSumParams(Params):
    weights: dict[str, float] = Field(default_factory=dict, description="component -> weight; unnamed components weigh 1")
    default_weight: float = 1.0
    """weight of a component not named in weights"""
    required: list[str] = Field(default_factory=list, description="components that must apply; else invalid_reward")
    invalid_reward: float = -1.0
    """reward when a required component does not apply"""


class RegexFormatParams(Params):
    pattern: str = Field(description="Python regex the whole completion must match (re.fullmatch, DOTALL)")
    name: str = "format"
    """the component's name in logs and combiner weights"""


class JsonFormatParams(Params):
    required_keys: list[str] = Field(default_factory=list)
    """keys the JSON object must have"""
    json_schema: dict | None = Field(None, description="a JSON Schema the object must satisfy (needs jsonschema)")
    name: str = "format"
    """the component's name in logs and combiner weights"""


class OverlongParams(Params):
    """DAPO overlong shaping on the completion length (characters or words)."""

    max_length: int = Field(gt=0, description="L_max")
    cache_length: int = Field(gt=0, description="L_cache: the soft band below L_max")
    unit: Literal["chars", "words"] = "chars"
    """measure the completion in characters or words"""
    name: str = "overlong"
    """the component's name in logs and combiner weights"""


class LengthPenaltyParams(Params):
    min_length: int = Field(0, ge=0)
    """shortest completion, in words, without a penalty"""
    max_length: int = Field(10_000, gt=0)
    """longest completion, in words, without a penalty"""
    penalty: float = Field(1.0, ge=0, description="reward -penalty * relative distance outside [min, max]")
    name: str = "length"
    """the component's name in logs and combiner weights"""


class WeightedSum:
    """sum(weight[c] * value[c]) over components whose value is not None.

    >>> WeightedSum(WeightedSumParams(weights={"rank": 1.0, "format": 0.2})).combine({"rank": 0.3, "format": 1.0, "x": None})
    0.5
    """

    def __init__(self, params: WeightedSumParams) -> None:
        self.params = params

    def combine(self, components: Mapping[str, float | None]) -> float:
        if any(components.get(name) is None for name in self.params.required):
            return self.params.invalid_reward
        total = 0.0
        for name, value in components.items():
            if value is not None:
                total += self.params.weights.get(name, self.params.default_weight) * value
        return total


class RewardError(ReasonRLError):
    pass


INVALID = "invalid"


def score_samples(reward_fns, combiner, prompts, completions, examples, on_error="raise", invalid_reward=-1.0):
    """Run every reward function, merge components per sample, combine to scalars.

    Returns (scalars, components). A function that raises stops the run with its name
    and the failing sample's index, or (``on_error="invalid"``) scores the batch's
    samples one by one and gives ``invalid_reward`` to the ones that fail. Every
    sample's components then carry ``invalid`` (1.0 or 0.0), added after combining, so
    metrics count the failures instead of averaging over the samples that worked.
    """
    merged: list[dict[str, float | None]] = [{} for _ in completions]
    invalid = [False] * len(completions)
    for name, fn in reward_fns:
        for index, parts in enumerate(_call_reward(name, fn, prompts, completions, examples, on_error)):
            if parts is None:
                invalid[index] = True
            else:
                merged[index].update(parts)
    scalars = [invalid_reward if bad else combiner.combine(parts) for parts, bad in zip(merged, invalid)]
    for parts, bad in zip(merged, invalid):
        parts[INVALID] = float(bad)
    return scalars, merged


def _call_reward(name, fn, prompts, completions, examples, on_error):
    try:
        result = fn(prompts, completions, examples)
    except Exception as exc:
        if on_error != "invalid":
            index = _first_failing(fn, prompts, completions, examples)
            raise RewardError(
                f"reward function {name!r} raised on sample {index} ({type(exc).__name__}: {exc}); fix it or "
                f"set on_reward_error: invalid to score failing samples as invalid"
            ) from exc
        result = []
        for i in range(len(completions)):
            try:
                result.extend(fn(prompts[i:i + 1], completions[i:i + 1], examples[i:i + 1]))
            except Exception:
                result.append(None)
    if len(result) != len(completions):
        raise RewardError(f"reward function {name!r} returned {len(result)} results for {len(completions)} samples")
    return result


def _first_failing(fn, prompts, completions, examples) -> int | None:
    for i in range(len(completions)):
        try:
            fn(prompts[i:i + 1], completions[i:i + 1], examples[i:i + 1])
        except Exception:
            return i
    return None


class RegexFormat:
    """1.0 if the completion fully matches ``pattern`` (DOTALL), else 0.0.

    >>> RegexFormat(RegexFormatParams(pattern=r"<a>.*</a>"))([""], ["<a>x</a>"], [{}])
    [{'format': 1.0}]
    """

    def __init__(self, params: RegexFormatParams) -> None:
        self.params = params
        self.regex = re.compile(params.pattern, re.DOTALL)

    def __call__(self, prompts, completions, examples):
        return [{self.params.name: float(self.regex.fullmatch(c.strip()) is not None)} for c in completions]


class JsonFormat:
    """1.0 if the completion holds a JSON object (fences allowed) with the required keys
    and, when ``json_schema`` is set, valid against that schema."""

    def __init__(self, params: JsonFormatParams) -> None:
        self.params = params
        self.validator = None
        if params.json_schema is not None:
            try:
                import jsonschema
            except ImportError as exc:
                raise ReasonRLError("json_format.json_schema needs the jsonschema package: pip install jsonschema") from exc
            self.validator = jsonschema.Draft202012Validator(params.json_schema)

    def __call__(self, prompts, completions, examples):
        return [{self.params.name: float(self.valid(extract_json_object(c)))} for c in completions]

    def valid(self, obj) -> bool:
        if not isinstance(obj, dict) or not all(k in obj for k in self.params.required_keys):
            return False
        return self.validator is None or self.validator.is_valid(obj)


def extract_json_object(text: str):
    """The first top-level ``{...}`` in ``text`` parsed as JSON, or None."""
    start = text.find("{")
    while start != -1:
        depth, in_string, escaped = 0, False, False
        for end in range(start, len(text)):
            ch = text[end]
            if in_string:
                escaped = ch == "\\" and not escaped
                if ch == '"' and not escaped:
                    in_string = False
                continue
            if ch == '"':
                in_string = True
            elif ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
                if depth == 0:
                    try:
                        return json.loads(text[start:end + 1])
                    except json.JSONDecodeError:
                        break
        start = text.find("{", start + 1)
    return None


def overlong_penalty(length: int, max_length: int, cache_length: int) -> float:
    """DAPO's soft overlong punishment.

    >>> overlong_penalty(80, 100, 20), overlong_penalty(90, 100, 20), overlong_penalty(101, 100, 20)
    (0.0, -0.5, -1.0)
    """
    soft_start = max_length - cache_length
    if length <= soft_start:
        return 0.0
    if length <= max_length:
        return (soft_start - length) / cache_length
    return -1.0


def _length(text: str, unit: str) -> int:
    return len(text.split()) if unit == "words" else len(text)


class Overlong:
    """DAPO overlong shaping as a reward component."""

    def __init__(self, params: OverlongParams) -> None:
        self.params = params

    def __call__(self, prompts, completions, examples):
        p = self.params
        return [{p.name: overlong_penalty(_length(c, p.unit), p.max_length, p.cache_length)} for c in completions]


class LengthPenalty:
    """0 inside [min_length, max_length] words; -penalty * relative distance outside."""

    def __init__(self, params: LengthPenaltyParams) -> None:
        self.params = params

    def __call__(self, prompts, completions, examples):
        p = self.params
        return [{p.name: word_count_penalty(len(c.split()), p.min_length, p.max_length, p.penalty)} for c in completions]


def word_count_penalty(words: int, low: int, high: int, penalty: float, max_excess: float | None = None) -> float:
    """0 for ``low <= words <= high``; else -penalty * the relative shortfall (words / low) or
    excess (words / high), the excess capped at ``max_excess`` when given."""
    if words < low:
        return -penalty * (low - words) / max(low, 1)
    if words > high:
        excess = (words - high) / high
        return -penalty * (excess if max_excess is None else min(max_excess, excess))
    return 0.0
