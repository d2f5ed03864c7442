"""Semantic IDs: residual quantisation of item embeddings into short code sequences.

``rq_kmeans`` fits k-means on the residual at each level. ``rq_vae`` learns an encoder,
residual codebooks with EMA updates and a decoder. Both share the collision handling
that makes codes unique: items that share a full code keep their prefix and move to a
free last-level code under it (nearest free centroid, or a random free one); an optional
extra code numbers whatever still collides.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict

import numpy as np
import torch

from reasonrl.gr2_plugins.params import RQVAEParams, SemanticIdParams

LEVEL_LETTERS = "abcdefgh"
SID_BEGIN, SID_END = "<|sid_begin|>", "<|sid_end|>"


def sid_token(level: int, code: int) -> str:
    return f"<s_{LEVEL_LETTERS[level]}_{code}>"


def sid_string(codes) -> str:
    return SID_BEGIN + "".join(sid_token(level, int(c)) for level, c in enumerate(codes)) + SID_END


def all_sid_tokens(sizes: list[int], dedup_size: int = 0) -> list[str]:
    tokens = [SID_BEGIN, SID_END] + [sid_token(level, c) for level, size in enumerate(sizes) for c in range(size)]
    return tokens + [sid_token(len(sizes), c) for c in range(dedup_size)]


# ---------------------------------------------------------------- k-means
def _sq_distances(x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    return (x * x).sum(1, keepdim=True) - 2 * x @ centroids.T + (centroids * centroids).sum(1)[None]


def assign(x: torch.Tensor, centroids: torch.Tensor, chunk: int = 65_536) -> torch.Tensor:
    return torch.cat([_sq_distances(x[i:i + chunk], centroids).argmin(1) for i in range(0, len(x), chunk)])


def kmeans(x: torch.Tensor, k: int, iterations: int, generator: torch.Generator) -> torch.Tensor:
    """Lloyd's k-means with k-means++ seeding; empty clusters re-seeded from far points."""
    k = min(k, len(x))
    centroids = _kmeans_pp(x, k, generator)
    for _ in range(iterations):
        labels = assign(x, centroids)
        sums = torch.zeros_like(centroids).index_add_(0, labels, x)
        counts = torch.bincount(labels, minlength=k).float()
        empty = counts == 0
        centroids = torch.where(empty[:, None], centroids, sums / counts.clamp(min=1)[:, None])
        if empty.any():
            far = _sq_distances(x, centroids).min(1).values.topk(int(empty.sum())).indices
            centroids[empty] = x[far]
    return centroids


def _kmeans_pp(x: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    first = torch.randint(len(x), (1,), generator=generator)
    centroids = [x[first]]
    closest = _sq_distances(x, centroids[0]).squeeze(1).clamp(min=0)
    for _ in range(1, k):
        total = closest.sum()
        if total <= 0:
            pick = torch.randint(len(x), (1,), generator=generator)
        else:
            pick = torch.multinomial(closest / total, 1, generator=generator)
        centroids.append(x[pick])
        closest = torch.minimum(closest, _sq_distances(x, x[pick]).squeeze(1).clamp(min=0))
    return torch.cat(centroids)


# ---------------------------------------------------------------- collisions and reports
def resolve_collisions(codes: np.ndarray, residuals: np.ndarray | None, last_centroids, mode: str, seed: int) -> np.ndarray:
    """Give every item sharing a full code a free last-level code under the same prefix.

    ``residuals`` [N, D] are the inputs of the last level; ``last_centroids`` [K, D] is the
    last level's codebook (shared by all prefixes in residual quantisation).
    """
    if mode == "none":
        return codes
    codes = codes.copy()
    rng = np.random.default_rng(seed)
    by_prefix: dict[tuple, list[int]] = defaultdict(list)
    for item, row in enumerate(codes):
        by_prefix[tuple(row[:-1])].append(item)
    size = last_centroids.shape[0]
    for members in by_prefix.values():
        taken: set[int] = set()
        losers = []
        for item in members:
            if codes[item, -1] in taken:
                losers.append(item)
            else:
                taken.add(int(codes[item, -1]))
        for item in losers:
            free = [c for c in range(size) if c not in taken]
            if not free:
                break  # more items than codes under this prefix: left for the dedup token
            if mode == "random_free":
                choice = int(rng.choice(free))
            else:
                dist = ((last_centroids[free] - residuals[item]) ** 2).sum(1)
                choice = free[int(np.argmin(dist))]
            codes[item, -1] = choice
            taken.add(choice)
    return codes


def add_dedup_code(codes: np.ndarray) -> np.ndarray:
    seen: Counter = Counter()
    extra = np.zeros((len(codes), 1), dtype=codes.dtype)
    for item, row in enumerate(codes):
        key = tuple(row)
        extra[item, 0] = seen[key]
        seen[key] += 1
    return np.concatenate([codes, extra], axis=1)


def uniqueness(codes: np.ndarray) -> float:
    return len({tuple(r) for r in codes}) / max(len(codes), 1)


def level_usage(codes: np.ndarray, sizes: list[int]) -> list[dict[str, float]]:
    usage = []
    for level, size in enumerate(sizes):
        counts = np.bincount(codes[:, level], minlength=size)
        p = counts[counts > 0] / counts.sum()
        usage.append({"used": int((counts > 0).sum()), "size": size, "usage": float((counts > 0).mean()),
                      "entropy_bits": float(-(p * np.log2(p)).sum()), "max_bits": math.log2(size)})
    return usage


class _SemanticIds:
    """Shared reporting, token strings and collision handling of both tokenizers."""

    params: SemanticIdParams

    def _finish(self, raw: np.ndarray, residuals: np.ndarray, last_centroids: np.ndarray) -> None:
        self.raw_codes = raw
        resolved = resolve_collisions(raw, residuals, last_centroids, self.params.collision, self.params.seed)
        self.codes = add_dedup_code(resolved) if self.params.dedup_token else resolved
        self._report = {
            "items": int(len(raw)),
            "uniqueness_raw": uniqueness(raw),
            "uniqueness": uniqueness(self.codes),
            "collision_handling": self.params.collision,
            "dedup_token": self.params.dedup_token,
            "levels": level_usage(self.codes, self.params.sizes()),
        }

    def tokens(self, codes) -> list[str]:
        return [sid_string(row) for row in np.asarray(codes)]

    def vocabulary(self) -> list[str]:
        dedup = int(self.codes[:, -1].max()) + 1 if self.params.dedup_token else 0
        return all_sid_tokens(self.params.sizes(), dedup)

    def report(self) -> dict:
        return self._report


class RQKMeans(_SemanticIds):
    """Residual k-means, one codebook per level."""

    def __init__(self, params: SemanticIdParams) -> None:
        self.params = params

    def fit(self, embeddings) -> "RQKMeans":
        x = torch.as_tensor(np.asarray(embeddings, dtype=np.float32))
        generator = torch.Generator().manual_seed(self.params.seed)
        self.codebooks = []
        residual = x.clone()
        raw = []
        for size in self.params.sizes():
            sample = residual
            if len(residual) > self.params.max_fit_samples:
                sample = residual[torch.randperm(len(residual), generator=generator)[: self.params.max_fit_samples]]
            centroids = kmeans(sample, size, self.params.iterations, generator)
            labels = assign(residual, centroids)
            self.codebooks.append(centroids)
            raw.append(labels)
            last_input = residual
            residual = residual - centroids[labels]
        self._finish(torch.stack(raw, 1).numpy(), last_input.numpy(), self.codebooks[-1].numpy())
        return self

    def encode(self, embeddings) -> np.ndarray:
        """Codes of new items by nearest centroid per level (no collision handling)."""
        residual = torch.as_tensor(np.asarray(embeddings, dtype=np.float32))
        codes = []
        for centroids in self.codebooks:
            labels = assign(residual, centroids)
            codes.append(labels)
            residual = residual - centroids[labels]
        return torch.stack(codes, 1).numpy()


class RQVAE(_SemanticIds, torch.nn.Module):
    """Encoder -> residual codebooks (EMA updates) -> decoder; codes are the codebook indices."""

    def __init__(self, params: RQVAEParams) -> None:
        torch.nn.Module.__init__(self)
        self.params = params

    def _build(self, dim: int) -> None:
        p = self.params
        self.encoder = torch.nn.Sequential(torch.nn.Linear(dim, p.hidden_dim), torch.nn.SiLU(),
                                           torch.nn.Linear(p.hidden_dim, p.latent_dim))
        self.decoder = torch.nn.Sequential(torch.nn.Linear(p.latent_dim, p.hidden_dim), torch.nn.SiLU(),
                                           torch.nn.Linear(p.hidden_dim, dim))
        self.codebooks = [torch.zeros(size, p.latent_dim) for size in p.sizes()]
        self.ema_counts = [torch.ones(size) for size in p.sizes()]
        self.ema_sums = [torch.zeros(size, p.latent_dim) for size in p.sizes()]

    def quantise(self, z: torch.Tensor, update: bool):
        residual, quantised, codes = z, torch.zeros_like(z), []
        for level, codebook in enumerate(self.codebooks):
            labels = assign(residual.detach(), codebook)
            if update:
                self._ema_update(level, residual.detach(), labels)
                codebook = self.codebooks[level]
            chosen = codebook[labels]
            quantised = quantised + chosen
            codes.append(labels)
            last_input = residual
            residual = residual - chosen
        return quantised, torch.stack(codes, 1), last_input

    def _ema_update(self, level: int, residual: torch.Tensor, labels: torch.Tensor) -> None:
        decay = self.params.ema_decay
        size = self.codebooks[level].shape[0]
        counts = torch.bincount(labels, minlength=size).float()
        sums = torch.zeros_like(self.ema_sums[level]).index_add_(0, labels, residual)
        self.ema_counts[level] = decay * self.ema_counts[level] + (1 - decay) * counts
        self.ema_sums[level] = decay * self.ema_sums[level] + (1 - decay) * sums
        n = self.ema_counts[level].sum()
        smoothed = (self.ema_counts[level] + 1e-5) / (n + size * 1e-5) * n  # Laplace smoothing
        self.codebooks[level] = self.ema_sums[level] / smoothed[:, None]

    def fit(self, embeddings) -> "RQVAE":
        p = self.params
        x = torch.as_tensor(np.asarray(embeddings, dtype=np.float32))
        generator = torch.Generator().manual_seed(p.seed)
        torch.manual_seed(p.seed)
        self._build(x.shape[1])
        self._init_codebooks(x, generator)
        optimizer = torch.optim.Adam(list(self.encoder.parameters()) + list(self.decoder.parameters()), lr=p.lr)
        for _ in range(p.epochs):
            for idx in torch.randperm(len(x), generator=generator).split(p.batch_size):
                z = self.encoder(x[idx])
                quantised, _, _ = self.quantise(z, update=True)
                straight = z + (quantised - z).detach()  # straight-through estimator
                loss = torch.nn.functional.mse_loss(self.decoder(straight), x[idx]) + \
                    p.commitment * torch.nn.functional.mse_loss(z, quantised.detach())
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        with torch.no_grad():
            _, codes, last_input = self.quantise(self.encoder(x), update=False)
        self.reconstruction_loss = float(loss.detach())
        self._finish(codes.numpy(), last_input.numpy(), self.codebooks[-1].numpy())
        self._report["reconstruction_mse"] = self.reconstruction_loss
        return self

    def _init_codebooks(self, x: torch.Tensor, generator: torch.Generator) -> None:
        """Seed each level's codebook with k-means of the untrained encoder's residuals."""
        with torch.no_grad():
            residual = self.encoder(x)
            for level, codebook in enumerate(self.codebooks):
                centroids = kmeans(residual, codebook.shape[0], 10, generator)
                if len(centroids) < codebook.shape[0]:
                    extra = residual[torch.randint(len(residual), (codebook.shape[0] - len(centroids),), generator=generator)]
                    centroids = torch.cat([centroids, extra])
                self.codebooks[level] = centroids.clone()
                self.ema_sums[level] = centroids.clone()
                residual = residual - centroids[assign(residual, centroids)]

    def encode(self, embeddings) -> np.ndarray:
        with torch.no_grad():
            z = self.encoder(torch.as_tensor(np.asarray(embeddings, dtype=np.float32)))
            return self.quantise(z, update=False)[1].numpy()
