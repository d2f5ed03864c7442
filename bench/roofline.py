"""Each phase of an RL step, and the sft / lm steps, against what this machine allows.

For every phase the table gives the measured time (median of >= 3 runs), the floor from its
FLOPs at the measured fp32 matrix-product rate and from its bytes at the measured memory
bandwidth (both measured in the same run), and the share of that floor reached
(floor / measured). Training rows also give tokens/s and model FLOPs utilisation (MFU).

    python bench/roofline.py                          # tiny model and SmolLM2-135M
    python bench/roofline.py --models tiny --out bench/results/roofline.md

FLOPs count the matrix products (2 per multiply-add: weights x tokens, plus attention's
QK^T and AV); backward is twice the forward. Bytes: the weights read once per forward (and
the KV cache per decode step); AdamW reads parameter, gradient and both moments and writes
three of them back.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from rl_step_vs_trl import make_prompts, model_dir  # noqa: E402

SHAPE = {"prompts": 4, "group": 4, "prompt_len": 32, "new_tokens": 64}  # short prompt + long answer
TRAIN = {"batch": 4, "seq_len": 256}
REPEATS = 3
CHUNKED = True  # the stages' chunked_logits option, with which bench/results/roofline.md was measured


# ---------------------------------------------------------------- machine limits
def cpu_name() -> str:
    """The CPU's model name (Linux), else what ``platform`` knows: absolute times hold per machine."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def median_seconds(fn, repeats: int = REPEATS, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_rate(size: int = 2048) -> float:
    """fp32 FLOP/s of one large matrix product."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    return 2 * size**3 / median_seconds(lambda: a @ b, repeats=5)


def bandwidth(megabytes: int = 512) -> float:
    """Bytes/s read by summing one large tensor."""
    x = torch.ones(megabytes * 2**20 // 4)
    return x.numel() * 4 / median_seconds(lambda: x.sum(), repeats=5)


# ---------------------------------------------------------------- model arithmetic
class Arithmetic:
    """FLOPs and bytes of a decoder-only model's pieces."""

    def __init__(self, model) -> None:
        config = model.config
        self.layers, self.hidden = config.num_hidden_layers, config.hidden_size
        heads = config.num_attention_heads
        self.kv_dim = getattr(config, "num_key_value_heads", heads) * self.hidden // heads
        self.total = sum(p.numel() for p in model.parameters())
        # the weights used in matrix products: every linear layer, the output head included (tied
        # or not); not the input embedding (a lookup) or the norms
        self.linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
        self.weight_bytes = self.total * 4

    def forward_flops(self, tokens: int, context: float) -> float:
        """``tokens`` new positions, each attending over ``context`` positions on average."""
        return 2 * self.linear * tokens + 4 * self.layers * self.hidden * tokens * context

    def kv_bytes(self, rows: int, context: float) -> float:
        return 2 * self.layers * rows * context * self.kv_dim * 4

    def adamw_bytes(self) -> float:
        return self.total * 4 * 7


# ---------------------------------------------------------------- phases
def rl_phases(model, tokenizer, arithmetic: Arithmetic) -> list[tuple]:
    """(phase, seconds, flops, bytes) of one RL step's phases on the short-prompt shape."""
    from reasonrl.plugins.engine.rollout import HFRolloutEngine, SamplingParams, prefill
    from reasonrl.plugins.engine.scoring import completion_logprobs

    s = SHAPE
    rows = s["prompts"] * s["group"]
    prompts = make_prompts(tokenizer, s["prompts"], s["prompt_len"])
    ids = [torch.tensor(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    prompt_tokens = sum(len(i) for i in ids)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    with torch.no_grad():
        t_prefill = median_seconds(lambda: prefill(model, ids, pad, s["group"]))
    engine = HFRolloutEngine(SamplingParams(max_new_tokens=s["new_tokens"], temperature=1.0,
                                            prompt_batch_size=s["prompts"]))
    eos = tokenizer.eos_token_id
    tokenizer.eos_token_id, model.generation_config.eos_token_id = None, None  # decode every step
    try:
        out = engine.generate(model, tokenizer, prompts, s["group"], generator=torch.Generator().manual_seed(0))
        t_generate = median_seconds(lambda: engine.generate(model, tokenizer, prompts, s["group"],
                                                             generator=torch.Generator().manual_seed(0)))
    finally:
        tokenizer.eos_token_id = model.generation_config.eos_token_id = eos
    steps = out.completion_ids.shape[1]
    t_decode = (t_generate - t_prefill) / steps
    context = s["prompt_len"] + steps / 2
    answer_tokens = rows * steps

    def score():
        with torch.no_grad():
            completion_logprobs(model, out.prompt_ids, out.completion_ids, s["group"], pad, chunked=CHUNKED)

    def forward_backward():
        logprobs, _ = completion_logprobs(model, out.prompt_ids, out.completion_ids, s["group"], pad, chunked=CHUNKED)
        (logprobs * out.mask).sum().backward()

    t_products = median_seconds(weight_products(model, rows))
    t_score = median_seconds(score)
    t_train = median_seconds(forward_backward)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-9)
    t_optim = median_seconds(optimizer.step)
    model.zero_grad(set_to_none=True)
    score_flops = arithmetic.forward_flops(prompt_tokens, s["prompt_len"] / 2) + \
        arithmetic.forward_flops(answer_tokens, context)
    return [
        ("prefill", t_prefill, arithmetic.forward_flops(prompt_tokens, s["prompt_len"] / 2), arithmetic.weight_bytes),
        (f"decode (1 step, batch {rows})", t_decode, arithmetic.forward_flops(rows, context),
         arithmetic.weight_bytes + arithmetic.kv_bytes(rows, context)),
        (f"... its matrix products alone (batch {rows})", t_products, 2 * arithmetic.linear * rows,
         4 * arithmetic.linear),
        ("scoring (old log-probs)", t_score, score_flops, arithmetic.weight_bytes),
        ("forward+backward", t_train, 3 * score_flops, 3 * arithmetic.weight_bytes),
        ("optimizer (AdamW)", t_optim, 10 * arithmetic.total, arithmetic.adamw_bytes()),
    ]


def weight_products(model, rows: int):
    """Every linear weight once, in model order, on ``rows`` rows: what one decode step multiplies."""
    linears = [m.weight for m in model.modules() if isinstance(m, torch.nn.Linear)]
    inputs = {w.shape[1]: torch.randn(rows, w.shape[1]) for w in linears}

    def products():
        with torch.no_grad():
            for weight in linears:
                torch.nn.functional.linear(inputs[weight.shape[1]], weight)

    return products


def rows_table(model, arithmetic: Arithmetic, rate: float, bw: float, row_counts: list[int]) -> str:
    """The weights' matrix products per decode step at several batch sizes: the kernel's own ceiling.

    At few rows a product reads its whole weight for little arithmetic, so both its FLOP rate and
    the rate at which it reads the weights are given against the machine's measured limits.
    """
    lines = ["| rows per step | ms | GFLOP/s | share of the matmul rate | weights read GB/s | share of the bandwidth "
             "| tokens/s ceiling |", "|---|---|---|---|---|---|---|"]
    for rows in row_counts:
        seconds = median_seconds(weight_products(model, rows))
        flops, nbytes = 2 * arithmetic.linear * rows, 4 * arithmetic.linear
        lines.append(f"| {rows} | {milliseconds(seconds)} | {flops / seconds / 1e9:.0f} | "
                     f"{100 * flops / seconds / rate:.0f}% | {nbytes / seconds / 1e9:.1f} | "
                     f"{100 * nbytes / seconds / bw:.0f}% | {rows / seconds:.0f} |")
    return "\n".join(lines)


def train_phases(model, arithmetic: Arithmetic) -> list[tuple]:
    """(phase, seconds, flops, bytes, tokens) of one sft step (loss on the second half) and one lm step."""
    from reasonrl.plugins.engine.supervised import label_logprobs, weighted_mean_nll

    batch, length = TRAIN["batch"], TRAIN["seq_len"]
    ids = torch.randint(0, model.config.vocab_size, (batch, length), generator=torch.Generator().manual_seed(0))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-9)
    keep = length // 2

    def sft_step():
        logprobs = label_logprobs(model, ids, torch.ones_like(ids), length - keep - 1, chunked=CHUNKED)
        weighted_mean_nll(logprobs, torch.ones(batch, keep)).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def lm_step():
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    tokens = batch * length
    flops = 3 * arithmetic.forward_flops(tokens, length / 2)
    head = 2 * model.get_output_embeddings().weight.numel()
    sft_flops = flops - 3 * head * (tokens - batch * keep)  # the head runs on the kept positions only
    memory = 3 * arithmetic.weight_bytes + arithmetic.adamw_bytes()
    return [(f"sft step ({batch} x {length}, loss on {keep})", median_seconds(sft_step), sft_flops, memory, tokens),
            (f"lm step ({batch} x {length})", median_seconds(lm_step), flops, memory, tokens)]


# ---------------------------------------------------------------- report
def milliseconds(seconds: float) -> str:
    """One decimal from 10 ms up, three below: the share stays readable back from the cells."""
    ms = seconds * 1e3
    return f"{ms:.1f}" if ms >= 10 else f"{ms:.3f}"


def floor_cells(seconds: float, flops: float, nbytes: float, rate: float, bw: float) -> list[str]:
    compute, memory = flops / rate, nbytes / bw
    floor = max(compute, memory)
    bound = "compute" if compute >= memory else "memory"
    return [milliseconds(seconds), milliseconds(compute), milliseconds(memory), bound, f"{100 * floor / seconds:.0f}%"]


def model_table(kind: str, rate: float, bw: float, row_counts: list[int] = ()) -> str:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = model_dir(kind)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    arithmetic = Arithmetic(model)
    lines = [f"**{kind}** ({arithmetic.total / 1e6:.1f}M parameters, {arithmetic.linear / 1e6:.1f}M in matrix products)",
             "", "| phase | measured ms | compute floor ms | memory floor ms | bound | floor reached | tokens/s | MFU |",
             "|---|---|---|---|---|---|---|---|"]
    for phase, seconds, flops, nbytes in rl_phases(model, tokenizer, arithmetic):
        lines.append("| " + " | ".join([phase, *floor_cells(seconds, flops, nbytes, rate, bw), "", ""]) + " |")
    for phase, seconds, flops, nbytes, tokens in train_phases(model, arithmetic):
        cells = floor_cells(seconds, flops, nbytes, rate, bw)
        lines.append("| " + " | ".join([phase, *cells, f"{tokens / seconds:.0f}", f"{100 * flops / seconds / rate:.0f}%"])
                     + " |")
    if row_counts:
        lines += ["", f"Matrix products of one decode step by rows per step ({kind}; `--rows`):", "",
                  rows_table(model, arithmetic, rate, bw, row_counts)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="tiny,smollm2", help="comma-separated: tiny, smollm2")
    parser.add_argument("--out", type=Path, default=None, help="also write the tables to this markdown file")
    parser.add_argument("--rows", default="1,16,64,128",
                        help="comma-separated rows per step for the matrix-product table ('' to skip it)")
    args = parser.parse_args()
    row_counts = [int(r) for r in args.rows.split(",") if r]
    torch.manual_seed(0)
    rate, bw = matmul_rate(), bandwidth()
    header = (f"Machine: {cpu_name()}, {torch.get_num_threads()} threads, torch "
              f"{torch.__version__}. Measured now: fp32 matrix product {rate / 1e9:.0f} GFLOP/s, memory read "
              f"{bw / 1e9:.1f} GB/s. Shape: {SHAPE['prompts']} prompts x {SHAPE['group']} samples, "
              f"{SHAPE['prompt_len']}-token prompts, {SHAPE['new_tokens']} new tokens; medians of {REPEATS} runs.")
    tables = [model_table(kind, rate, bw, row_counts) for kind in args.models.split(",")]
    text = header + "\n\n" + "\n\n".join(tables) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
