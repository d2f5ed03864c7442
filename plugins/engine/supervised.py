"""The ``sft`` and ``lm`` stages."""

from __future__ import annotations

import random
from typing import Any

import torch
from pydantic import Field

from reasonrl.core.contracts import StageContext
from reasonrl.core.errors import ReasonRLError
from reasonrl.plugins.engine.logits import chosen_logprobs, split_policy
from reasonrl.plugins.engine.models import chat_prompt
from reasonrl.plugins.engine.rollout import forward_with_cache, shared_prefix_cache, shared_prefix_length
from reasonrl.plugins.engine.scoring import token_logprobs
from reasonrl.plugins.engine.training import Trainer, TrainingParams, step_seed


class LMParams(TrainingParams):
    text_field: str = "text"
    """the example field holding the text"""
    seq_len: int = Field(128, gt=1)
    """tokens per packed sequence"""
    batch_size: int = Field(8, gt=0)
    """packed sequences per step"""
    steps: int = Field(100, gt=0)
    """training steps"""


class SFTParams(TrainingParams):
    prompt_field: str = "prompt"
    """the example field holding the prompt"""
    completion_field: str = "completion"
    """the example field holding the target completion"""
    segments_field: str | None = Field("segments", description="optional per-example [[text, weight], ...] "
                                       "completion; null: train on completion_field alone")
    chat_template: bool = Field(False, description="wrap prompts with the tokenizer's chat template")
    max_length: int | None = Field(None, gt=1)
    """longest prompt + completion allowed, in tokens (unset: the data's longest, within the
    model's context). A longer example stops the stage: cutting it would drop trained tokens"""
    batch_size: int = Field(8, gt=0)
    """examples per step"""
    epochs: float = Field(1.0, gt=0)
    """passes over the data (fractions allowed)"""
    balance_field: str | None = Field(None, description=(
        "class-balanced batches: each example of a batch first draws a value of this field (e.g. label) "
        "uniformly, then a row with that value; null: rows are drawn uniformly"))


def weighted_nll(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """sum_t w_t * -log p(label_t) / #trained tokens; logits[t] predicts labels[t].

    With weights lambda_r on reasoning and lambda_o on the ranking this is GR2's
    weighted SFT loss; weight 0 marks prompt and padding tokens.
    """
    # gather - logsumexp: no [batch, tokens, vocabulary] log-softmax is kept for the backward pass
    return weighted_mean_nll(token_logprobs(logits, labels.clamp(min=0)), weights)


def weighted_mean_nll(logprobs: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """sum_t w_t * -logprobs_t / #trained tokens (weight > 0)."""
    return -(logprobs * weights).sum() / (weights > 0).sum().clamp(min=1)


class SFTStage(Trainer):
    """Supervised fine-tuning on prompt/completion pairs; loss on completion tokens only.

    A completion may come as weighted segments (``[[text, weight], ...]``) so that,
    for example, reasoning tokens weigh less than the final answer.
    """

    def run(self, context: StageContext) -> dict[str, Any]:
        params = self.params
        self.context = context
        examples = self.examples(params.split, (params.prompt_field,))
        self._check_targets(examples)
        steps = max(1, int(len(examples) * params.epochs / params.batch_size))
        self.setup(context, steps)
        self._check_characters(examples)
        encoded = [self.encode(e) for e in examples]
        self._check_lengths(encoded)
        draw = row_sampler(examples, params.balance_field, context.stage_id)
        self.state = self.resumed_extras()  # a subclass adds its own entries
        losses = self.state.setdefault("losses", [])
        bar = self.progress("sft")
        if self.start_step == 0:
            self.before_steps()
        for step in range(self.start_step, steps):
            rng = random.Random(step_seed(self.seed, step))
            loss = self.train_on([encoded[draw(rng)] for _ in range(params.batch_size)])
            losses.append(loss)
            context.log(step + 1, {"loss": loss, "lr": self.scheduler.get_last_lr()[0]})
            bar.set_postfix(loss=f"{loss:.4f}")
            bar.update(1)
            self.after_step(step + 1)
            self.maybe_checkpoint(step + 1, self.state)
        bar.close()
        summary = self.before_save()
        self.save_model(self.state)
        return {"steps": steps, "loss_first": losses[0] if losses else None, "loss_last": losses[-1] if losses else None,
                "model_dir": str(context.stage_dir / "model"), **summary}

    def _check_targets(self, examples: list[dict[str, Any]]) -> None:
        p = self.params
        for index, example in enumerate(examples):
            if not (p.segments_field and example.get(p.segments_field)) and example.get(p.completion_field) is None:
                raise ReasonRLError(
                    f"sft stage {self.context.stage_id!r}: row {index} of split {p.split!r} has neither "
                    f"{p.completion_field!r} nor {p.segments_field!r}; its fields are {sorted(example)}. "
                    f"Set completion_field to the field holding the target text.")

    def encode(self, example: dict[str, Any]) -> tuple[list[int], list[float]]:
        p = self.params
        prompt = example[p.prompt_field]
        prompt = chat_prompt(self.tokenizer, prompt, p.chat_template)
        segments = (p.segments_field and example.get(p.segments_field)) or [[example[p.completion_field], 1.0]]
        ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        weights = [0.0] * len(ids)
        for text, weight in segments:
            piece = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            ids += piece
            weights += [float(weight)] * len(piece)
        ids.append(self.tokenizer.eos_token_id)
        weights.append(float(segments[-1][1]))
        return ids, weights

    def _token_limit(self) -> tuple[int | None, str]:
        context = getattr(self.accelerator.unwrap_model(self.model).config, "max_position_embeddings", None)
        return (self.params.max_length, "max_length") if self.params.max_length else (context, "the model's context")

    def _check_characters(self, examples: list[dict[str, Any]]) -> None:
        """A row that cannot fit however it tokenizes (no token is longer than 64 characters) is
        named before anything is tokenized: one huge row must not hold gigabytes first."""
        limit, name = self._token_limit()
        if limit is None:
            return
        p = self.params
        for index, example in enumerate(examples):
            segments = (p.segments_field and example.get(p.segments_field)) or [[example.get(p.completion_field), 1]]
            size = len(str(example[p.prompt_field])) + sum(len(str(text)) for text, _ in segments)
            if size > 64 * limit:
                raise ReasonRLError(
                    f"sft stage {self.context.stage_id!r}: row {index} of split {p.split!r} has {size} characters, "
                    f"far more than {name} ({limit} tokens) can hold; drop or shorten it")

    def _check_lengths(self, encoded: list[tuple[list[int], list[float]]]) -> None:
        """Stop before training if an example would not fit whole: never drop trained tokens."""
        limit, name = self._token_limit()
        if limit is None:
            return
        lengths = [len(ids) for ids, _ in encoded]
        over = sum(length > limit for length in lengths)
        if over:
            fix = (f"raise max_length to at least {max(lengths)} or leave it unset" if name == "max_length"
                   else "use a model with a longer context")
            raise ReasonRLError(
                f"sft stage {self.context.stage_id!r}: {over} of {len(lengths)} examples are longer than {name} "
                f"({limit} tokens; the longest has {max(lengths)}), and cutting them would drop trained tokens (the "
                f"end of the answer and its end-of-sequence token). Fix: {fix}, or shorten the prompts.")

    def train_on(self, batch: list[tuple[list[int], list[float]]]) -> float:
        """One optimiser step over ``batch``, split into ``gradient_accumulation`` micro-batches."""
        batch = self.shard(batch)
        parts = self.params.gradient_accumulation
        size = -(-len(batch) // parts)
        total = 0.0
        for start in range(0, len(batch), size):
            loss = self._micro_loss(batch[start:start + size]) / parts
            self.accelerator.backward(loss)
            total += float(loss.detach())
        self.optimizer_step()
        return total

    def _micro_loss(self, batch: list[tuple[list[int], list[float]]]) -> torch.Tensor:
        width = max(len(ids) for ids, _ in batch)
        pad = self.tokenizer.pad_token_id
        device = self.accelerator.device
        ids = torch.tensor([i + [pad] * (width - len(i)) for i, _ in batch], device=device)
        weights = torch.tensor([w + [0.0] * (width - len(w)) for _, w in batch], device=device)
        attention = torch.tensor([[1] * len(i) + [0] * (width - len(i)) for i, _ in batch], device=device)
        first = first_trained_position(weights)
        shared = min(shared_prefix_length([ids[row, :len(i)] for row, (i, _) in enumerate(batch)]), first)
        with self.accelerator.autocast():
            logprobs = label_logprobs(self.model, ids, attention, first, self.params.chunked_logits, shared)
            return weighted_mean_nll(logprobs, weights[:, first + 1:])


def label_logprobs(model, ids: torch.Tensor, attention: torch.Tensor, first: int, chunked: bool = False,
                   shared: int = 0) -> torch.Tensor:
    """log p(ids[:, t]) for t > ``first``. ``chunked``: through the chunked vocabulary projection when the model
    allows it (no [batch, tokens, vocabulary] logits tensor); else the logits of the kept positions
    only: the vocabulary projection of untrained prompt positions is skipped. ``shared`` (<= ``first``):
    leading tokens every row has, run once on one row (rows are right-padded, so positions stay)."""
    labels = ids[:, first + 1:].clamp(min=0)
    split = split_policy(model) if chunked else None
    inputs = {"input_ids": ids, "attention_mask": attention}
    cache = None
    if shared:
        cache = shared_prefix_cache(model, ids[:1, :shared], len(ids))
        inputs.update(input_ids=ids[:, shared:],
                      position_ids=torch.arange(shared, ids.shape[1], device=ids.device)[None].expand(len(ids), -1))
    if split is not None:
        hidden, _ = split.hidden(**inputs, cache=cache)
        return chosen_logprobs(split.head, hidden[:, first - shared:-1], labels)
    keep = ids.shape[1] - first
    if shared:
        out, _ = forward_with_cache(model, cache, **inputs, logits_to_keep=keep)
        return token_logprobs(out.logits[:, :-1], labels)
    try:
        logits = model(**inputs, logits_to_keep=keep).logits
    except TypeError:  # a model without logits_to_keep: compute all and slice
        logits = model(**inputs).logits[:, -keep:]
    return token_logprobs(logits[:, :-1], labels)


def row_sampler(examples: list[dict[str, Any]], field: str | None, stage_id: str):
    """``draw(rng) -> row index``: uniform over rows, or over the values of ``field`` first."""
    if field is None:
        return lambda rng: rng.randrange(len(examples))
    groups: dict[str, list[int]] = {}
    for index, example in enumerate(examples):
        if field not in example:
            raise ReasonRLError(f"sft stage {stage_id!r}: balance_field {field!r} is missing from row {index}; its "
                                f"fields are {sorted(example)}. Name a field every row has, or set it to null.")
        groups.setdefault(str(example[field]), []).append(index)
    values = sorted(groups)

    def draw(rng: random.Random) -> int:
        rows = groups[values[rng.randrange(len(values))]]
        return rows[rng.randrange(len(rows))]
    return draw


def first_trained_position(weights: torch.Tensor) -> int:
    """The earliest position whose logits predict a trained token (weights index the labels)."""
    trained = (weights[:, 1:] > 0).any(dim=0).nonzero()
    return int(trained[0]) if len(trained) else 0


def pack_sequences(token_lists: list[list[int]], seq_len: int, eos_id: int) -> list[list[int]]:
    """Concatenate documents separated by eos and cut into full blocks of ``seq_len``."""
    stream: list[int] = []
    for tokens in token_lists:
        stream += tokens + [eos_id]
    return [stream[i:i + seq_len] for i in range(0, len(stream) - seq_len + 1, seq_len)]


class LMStage(SFTStage):
    """Causal language modelling on a text corpus with sequence packing (mid-training)."""

    def run(self, context: StageContext) -> dict[str, Any]:
        params = self.params
        self.context = context
        texts = [e[params.text_field] for e in self.examples(params.split, (params.text_field,))]
        self.setup(context, params.steps)
        tokens = [self.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
        blocks = pack_sequences(tokens, params.seq_len, self.tokenizer.eos_token_id)
        if not blocks:
            raise ReasonRLError(f"lm stage {context.stage_id!r}: corpus shorter than one block of {params.seq_len} tokens")
        losses = list(self.resumed_extras().get("losses", []))
        bar = self.progress("lm")
        for step in range(self.start_step, params.steps):
            rng = random.Random(step_seed(self.seed, step))
            batch = [(b, [1.0] * len(b)) for b in (blocks[rng.randrange(len(blocks))] for _ in range(params.batch_size))]
            loss = self.train_on(batch)
            losses.append(loss)
            context.log(step + 1, {"loss": loss})
            bar.set_postfix(loss=f"{loss:.4f}")
            bar.update(1)
            self.maybe_checkpoint(step + 1, {"losses": losses})
        bar.close()
        self.save_model({"losses": losses})
        return {"steps": params.steps, "blocks": len(blocks), "loss_last": losses[-1] if losses else None,
                "model_dir": str(context.stage_dir / "model")}
