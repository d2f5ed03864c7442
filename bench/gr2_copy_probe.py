"""Can the GR2 CPU student copy three numbers from its prompt? By position, or by content?

The ML-1M student (a 2-layer, 256-wide Llama trained from scratch) has to repeat the
candidate numbers a line of its prompt names. This probe isolates that skill on synthetic
sequences, with the student's architecture and SFT settings (AdamW, lr 1e-3, batch 8):

- ``position``: the three numbers end the prompt, followed by a fixed answer cue, so each
  answer token sits a fixed distance after the token it copies (``gr2_prepare: evidence_hint``);
- ``content``: the numbers follow a marker token somewhere in the prompt's last 80 tokens, then
  more text, so the answer has to find the marker first (``evidence_summary``).

It prints, every ``--every`` steps, the share of 64 fresh prompts whose three answer tokens
are all right (greedy, teacher-forced), for each layout; chance is 1/720.

    python bench/gr2_copy_probe.py --steps 600 --out bench/results/gr2_copy_probe.md
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_output import save_table  # noqa: E402

VOCAB, DIGITS, FILLER = 512, range(10, 20), range(30, 512)
MARKER, CUE = 5, [6, 7, 8, 9]
PROMPT_TOKENS = 300  # about the ML-1M hint prompts' length


def example(layout: str, rng: random.Random) -> tuple[list[int], list[int]]:
    """(prompt, answer): filler text holding three distinct numbers after a marker."""
    length = PROMPT_TOKENS + rng.randint(-60, 60)
    filler = [rng.choice(FILLER) for _ in range(length)]
    answer = rng.sample(list(DIGITS), 3)
    if layout == "position":
        return filler + [MARKER] + answer + CUE, answer
    at = length - rng.randint(10, 80)
    return filler[:at] + [MARKER] + answer + filler[at:] + CUE, answer


def batch(layout: str, size: int, rng: random.Random):
    examples = [example(layout, rng) for _ in range(size)]
    width = max(len(p) + 3 for p, _ in examples)
    ids = torch.zeros(size, width, dtype=torch.long)
    labels = torch.full((size, width), -100)
    attention = torch.zeros(size, width, dtype=torch.long)
    for row, (prompt, answer) in enumerate(examples):
        whole = prompt + answer
        ids[row, :len(whole)] = torch.tensor(whole)
        attention[row, :len(whole)] = 1
        labels[row, len(prompt):len(whole)] = torch.tensor(answer)
    return ids, attention, labels, examples


def student(seed: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(vocab_size=VOCAB, hidden_size=256, num_hidden_layers=2, num_attention_heads=4,
                                        num_key_value_heads=4, intermediate_size=512, max_position_embeddings=1024))


@torch.no_grad()
def copy_rate(model, layout: str, rng: random.Random) -> float:
    ids, attention, _, examples = batch(layout, 64, rng)
    guess = model(input_ids=ids, attention_mask=attention).logits.argmax(-1)
    right = [all(int(guess[row, len(p) - 1 + k]) == a[k] for k in range(3)) for row, (p, a) in enumerate(examples)]
    return sum(right) / len(right)


def train(layout: str, steps: int, every: int, seed: int) -> list[tuple[int, float, float]]:
    """(step, training loss, copy rate on fresh prompts) every ``every`` steps."""
    model, rng, probe = student(seed), random.Random(seed), random.Random(seed + 1000)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    points = []
    for step in range(1, steps + 1):
        ids, attention, labels, _ = batch(layout, 8, rng)
        loss = model(input_ids=ids, attention_mask=attention, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if step % every == 0:
            points.append((step, loss.item(), copy_rate(model, layout, probe)))
            print(f"{layout:8s} step {step:5d}  loss {points[-1][1]:.3f}  copies {points[-1][2]:.2f}", flush=True)
    return points


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    start = time.time()
    curves = {layout: train(layout, args.steps, args.every, args.seed) for layout in ("position", "content")}
    lines = ["| step | copies by position | copies by content |", "|---|---|---|"]
    for (step, _, by_position), (_, _, by_content) in zip(curves["position"], curves["content"]):
        lines.append(f"| {step} | {by_position:.2f} | {by_content:.2f} |")
    text = (f"2-layer, 256-wide Llama from scratch, AdamW lr 1e-3, batch 8, seed {args.seed}; share of 64 fresh "
            f"prompts with all three numbers right (chance 1/720); {time.time() - start:.0f} s, "
            f"torch {torch.__version__}, {torch.get_num_threads()} threads\n\n" + "\n".join(lines) + "\n")
    print("\n" + text)
    save_table(args.out, "gr2_copy_probe.py", argv, text)
    return text


if __name__ == "__main__":
    main()
