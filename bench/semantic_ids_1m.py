"""Semantic IDs at scale: fit + encode 1,000,000 synthetic 384-d embeddings with rq_kmeans,
one row per k-means engine (torch, and faiss when installed), in one run.

    python bench/semantic_ids_1m.py [--items 1000000] [--levels 4] [--codebook 256] [--engines torch faiss]

Embeddings are unit vectors drawn around 4,096 topic centres (a spread like sentence
embeddings of a large catalogue). Target: under 60 s in total on 2 cores, >= 99% unique.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def synthetic_embeddings(n: int, dim: int = 384, topics: int = 4096, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(topics, dim)).astype(np.float32)
    x = centres[rng.integers(topics, size=n)] + rng.normal(scale=0.8, size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def main() -> None:
    from reasonrl.gr2_plugins.semantic_ids import RQKMeans, SemanticIdParams

    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--levels", type=int, default=4)
    parser.add_argument("--codebook", type=int, default=256)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--engines", nargs="+", default=["torch", "faiss"], choices=["torch", "faiss"])
    args = parser.parse_args()
    x = synthetic_embeddings(args.items)
    print("| engine | items | levels x codebook | threads | fit + collisions s | encode s | total s | items/s "
          "| unique raw | unique |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for engine in args.engines:
        params = SemanticIdParams(levels=args.levels, codebook_size=args.codebook, iterations=args.iterations,
                                  engine=engine)
        start = time.perf_counter()
        tokenizer = RQKMeans(params).fit(x)
        fit_s = time.perf_counter() - start
        start = time.perf_counter()
        tokenizer.encode(x)
        encode_s = time.perf_counter() - start
        report = tokenizer.report()
        total = fit_s + encode_s
        print(f"| {engine} | {args.items:,} | {args.levels} x {args.codebook} | {torch.get_num_threads()} | "
              f"{fit_s:.1f} | {encode_s:.1f} | {total:.1f} | {args.items / total:,.0f} | "
              f"{report['uniqueness_raw']:.4f} | {report['uniqueness']:.4f} |", flush=True)


if __name__ == "__main__":
    main()
