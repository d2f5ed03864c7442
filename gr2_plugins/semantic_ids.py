"""Semantic IDs: residual quantisation of item embeddings into short code sequences.

``rq_kmeans`` fits k-means on the residual at each level. ``rq_vae`` learns an encoder,
residual codebooks with EMA updates and a decoder. Both share the collision handling
that makes codes unique: items that share a full code keep their prefix and move to a
free last-level code under it (nearest free centroid, or a random free one); an optional
extra code numbers whatever still collides.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Literal

import numpy as np
import torch
from pydantic import Field

from reasonrl.core.errors import ReasonRLError
from reasonrl.core.registry import Params


class SemanticIdParams(Params):
    levels: int = Field(4, ge=1, le=8)
    """codes per semantic ID (residual quantisation levels)"""
    codebook_size: int | list[int] = Field(256, description="one size for every level, or one per level")
    iterations: int = Field(20, gt=0)
    """k-means iterations per level"""
    max_fit_samples: int = Field(100_000, gt=0, description="k-means centroids are fitted on a sample this big")
    collision: str = Field("nearest_free", pattern="^(none|nearest_free|random_free)$",
                           description="re-assign colliding items to free last-level codes under their prefix")
    dedup_token: bool = Field(False, description="append one more code that numbers items still colliding")
    seed: int = 0
    """seed of the k-means initialisation"""
    engine: Literal["torch", "faiss"] = Field(
        "torch", description="k-means engine: torch (built in) or faiss (pip install faiss-cpu; other codebooks "
                             "from the same data, so results differ from torch's)")

    def sizes(self) -> list[int]:
        sizes = self.codebook_size if isinstance(self.codebook_size, list) else [self.codebook_size] * self.levels
        if len(sizes) != self.levels:
            raise ValueError(f"codebook_size lists {len(sizes)} sizes for {self.levels} levels")
        return sizes


class RQVAEParams(SemanticIdParams):
    latent_dim: int = Field(32, gt=0)
    """dimension of the quantised latent"""
    hidden_dim: int = Field(256, gt=0)
    """hidden width of the encoder and decoder"""
    epochs: int = Field(200, gt=0)
    """training epochs over the item embeddings"""
    batch_size: int = Field(1024, gt=0)
    """training batch size of the RQ-VAE"""
    lr: float = Field(1e-3, gt=0)
    """Adam learning rate of the RQ-VAE"""
    ema_decay: float = Field(0.99, gt=0, lt=1)
    """decay of the exponential moving average that updates the codebooks"""
    commitment: float = Field(0.25, ge=0)
    """weight of the commitment loss that pulls encodings to their codes"""


LEVEL_LETTERS = "abcdefgh"
SEEDING_SAMPLE = 16_384
SID_BEGIN, SID_END = "<|sid_begin|>", "<|sid_end|>"


def sid_token(level: int, code: int) -> str:
    return f"<s_{LEVEL_LETTERS[level]}_{code}>"


def sid_string(codes) -> str:
    return SID_BEGIN + "".join(sid_token(level, int(c)) for level, c in enumerate(codes)) + SID_END


def all_sid_tokens(sizes: list[int], dedup_size: int = 0) -> list[str]:
    tokens = [SID_BEGIN, SID_END] + [sid_token(level, c) for level, size in enumerate(sizes) for c in range(size)]
    return tokens + [sid_token(len(sizes), c) for c in range(dedup_size)]


# ---------------------------------------------------------------- k-means
def _sq_distances(x: torch.Tensor, centroids: torch.Tensor, x_sq: torch.Tensor | None = None) -> torch.Tensor:
    """||x - c||^2 via norms and one matmul; pass ``x_sq`` when the same x is reused."""
    x_sq = (x * x).sum(1, keepdim=True) if x_sq is None else x_sq
    return torch.addmm(x_sq + (centroids * centroids).sum(1)[None], x, centroids.T, alpha=-2)


def nearest(x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """argmin_c ||x - c||^2 = argmin_c (||c||^2 - 2 x.c): the ||x||^2 term never changes the winner."""
    return torch.addmm((centroids * centroids).sum(1)[None], x, centroids.T, alpha=-2).argmin(1)


def assign(x: torch.Tensor, centroids: torch.Tensor, chunk: int = 65_536) -> torch.Tensor:
    return torch.cat([nearest(x[i:i + chunk], centroids) for i in range(0, len(x), chunk)])


def kmeans(x: torch.Tensor, k: int, iterations: int, generator: torch.Generator) -> torch.Tensor:
    """Lloyd's k-means with k-means++ seeding; empty clusters re-seeded from far points."""
    k = min(k, len(x))
    x_sq = (x * x).sum(1, keepdim=True)  # computed once: the loops below reuse it
    # k-means++ is sequential in k; seeding from a subsample keeps it cheap at scale
    seed_rows = torch.randperm(len(x), generator=generator)[:SEEDING_SAMPLE] if len(x) > SEEDING_SAMPLE else slice(None)
    centroids = _kmeans_pp(x[seed_rows], x_sq[seed_rows], k, generator)
    for _ in range(iterations):
        labels = nearest(x, centroids)
        sums = torch.zeros_like(centroids).index_add_(0, labels, x)
        counts = torch.bincount(labels, minlength=k).float()
        empty = counts == 0
        centroids = torch.where(empty[:, None], centroids, sums / counts.clamp(min=1)[:, None])
        if empty.any():
            far = _sq_distances(x, centroids, x_sq).min(1).values.topk(int(empty.sum())).indices
            centroids[empty] = x[far]
    return centroids


def faiss_kmeans(x: torch.Tensor, k: int, iterations: int, seed: int) -> torch.Tensor:
    """Centroids from faiss's k-means on all rows given (the caller has sampled already)."""
    try:
        import faiss
    except ImportError:
        raise ReasonRLError("semantic IDs with engine: faiss need the faiss package: pip install faiss-cpu, "
                            "or set engine: torch") from None
    k = min(k, len(x))
    model = faiss.Kmeans(x.shape[1], k, niter=iterations, seed=seed, max_points_per_centroid=len(x) // k + 1)
    model.train(np.ascontiguousarray(x.numpy(), dtype=np.float32))
    return torch.from_numpy(model.centroids.copy())


def _kmeans_pp(x: torch.Tensor, x_sq: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    first = torch.randint(len(x), (1,), generator=generator)
    centroids = [x[first]]
    closest = _sq_distances(x, centroids[0], x_sq).squeeze(1).clamp(min=0)
    for _ in range(1, k):
        total = closest.sum()
        if total <= 0:
            pick = torch.randint(len(x), (1,), generator=generator)
        else:
            pick = torch.multinomial(closest / total, 1, generator=generator)
        centroids.append(x[pick])
        torch.minimum(closest, _sq_distances(x, x[pick], x_sq).squeeze(1).clamp(min=0), out=closest)
    return torch.cat(centroids)


# ---------------------------------------------------------------- collisions and reports
def resolve_collisions(codes: np.ndarray, residuals: np.ndarray | None, last_centroids, mode: str, seed: int) -> np.ndarray:
    """Give every item sharing a full code a free last-level code under the same prefix.

    The first item (by index) keeps a contested code; the others take the nearest free
    centroid of the last level (``nearest_free``) or a random free code (``random_free``).
    ``residuals`` [N, D] are the inputs of the last level; ``last_centroids`` [K, D] is the
    last level's codebook (shared by all prefixes in residual quantisation).
    """
    if mode == "none" or len(codes) == 0:
        return codes
    codes = codes.copy()
    size = last_centroids.shape[0]
    _, prefix = np.unique(codes[:, :-1], axis=0, return_inverse=True)
    prefix = prefix.reshape(-1)
    _, keepers = np.unique(prefix.astype(np.int64) * size + codes[:, -1], return_index=True)
    movers = np.setdiff1d(np.arange(len(codes)), keepers)
    if len(movers) == 0:
        return codes
    keepers = keepers[np.argsort(prefix[keepers], kind="stable")]
    keeper_prefix = prefix[keepers]
    movers = movers[np.argsort(prefix[movers], kind="stable")]
    rng = np.random.default_rng(seed)
    for group in np.split(movers, np.nonzero(np.diff(prefix[movers]))[0] + 1):
        lo, hi = np.searchsorted(keeper_prefix, [prefix[group[0]], prefix[group[0]] + 1])
        taken = np.zeros(size, dtype=bool)
        taken[codes[keepers[lo:hi], -1]] = True
        free = np.nonzero(~taken)[0]
        codes[group[: len(free)], -1] = _pick_free(group[: len(free)], free, residuals, last_centroids, mode, rng)
    return codes  # items beyond the free codes of a prefix stay colliding (see dedup_token)


def _pick_free(items: np.ndarray, free: np.ndarray, residuals, centroids, mode: str, rng) -> np.ndarray:
    """One free code per item (``len(items) <= len(free)``)."""
    if mode == "random_free":
        return rng.permutation(free)[: len(items)]
    r, c = residuals[items], centroids[free]
    # ||r - c||^2 by one matmul: broadcasting [items, free, dim] costs dim times the memory
    distances = (r * r).sum(1)[:, None] - 2.0 * (r @ c.T) + (c * c).sum(1)[None, :]
    return free[nearest_free_assignment(distances)]


def nearest_free_assignment(distances: np.ndarray) -> np.ndarray:
    """Column per row, all distinct: in rounds, every unplaced row asks for its nearest
    untaken column and each asked column goes to its closest asker. Vectorised per round
    (a round places at least one row), unlike a row-by-row greedy loop."""
    rows = np.arange(len(distances))
    chosen = np.full(len(distances), -1)
    taken = np.zeros(distances.shape[1], dtype=bool)
    pending = rows
    while len(pending):
        open_distances = np.where(taken[None, :], np.inf, distances[pending])
        wanted = open_distances.argmin(1)
        by_column = np.lexsort((open_distances[np.arange(len(pending)), wanted], wanted))
        first = np.ones(len(by_column), dtype=bool)
        first[1:] = wanted[by_column][1:] != wanted[by_column][:-1]
        winners = by_column[first]
        chosen[pending[winners]] = wanted[winners]
        taken[wanted[winners]] = True
        pending = np.delete(pending, winners)
    return chosen


def add_dedup_code(codes: np.ndarray) -> np.ndarray:
    seen: Counter = Counter()
    extra = np.zeros((len(codes), 1), dtype=codes.dtype)
    for item, row in enumerate(codes):
        key = tuple(row)
        extra[item, 0] = seen[key]
        seen[key] += 1
    return np.concatenate([codes, extra], axis=1)


def uniqueness(codes: np.ndarray) -> float:
    return len(np.unique(codes, axis=0)) / max(len(codes), 1) if len(codes) else 0.0


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
    codes: np.ndarray | None = None  # [items, levels] after fit, collisions resolved

    def _finish(self, raw: np.ndarray, residuals: np.ndarray, last_centroids: np.ndarray) -> None:
        self.raw_codes = raw
        resolved = resolve_collisions(raw, residuals, last_centroids, self.params.collision, self.params.seed)
        self.codes = add_dedup_code(resolved) if self.params.dedup_token else resolved
        self._report = {
            "items": int(len(raw)),
            "uniqueness_raw": uniqueness(raw),
            "uniqueness": uniqueness(self.codes),
            "moved_by_collision_handling": int((raw != resolved).any(axis=1).sum()),
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
            centroids = self._kmeans(sample, size, generator, level=len(raw))
            labels = assign(residual, centroids)
            self.codebooks.append(centroids)
            raw.append(labels)
            last_input = residual
            residual = residual - centroids[labels]
        self._finish(torch.stack(raw, 1).numpy(), last_input.numpy(), self.codebooks[-1].numpy())
        return self

    def _kmeans(self, sample: torch.Tensor, size: int, generator: torch.Generator, level: int) -> torch.Tensor:
        if self.params.engine == "faiss":
            return faiss_kmeans(sample, size, self.params.iterations, self.params.seed + level)
        return kmeans(sample, size, self.params.iterations, generator)

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
