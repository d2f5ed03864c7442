"""MovieLens facts behind the README: pre-ranker quality and semantic-ID uniqueness.

    python bench/gr2_data_report.py [--dataset movielens_100k]
"""

from __future__ import annotations

import argparse

from reasonrl.gr2_plugins.data import k_core, leave_one_out, load_movielens
from reasonrl.gr2_plugins.embeddings import embed_texts
from reasonrl.gr2_plugins.metrics import ranking_metrics
from reasonrl.gr2_plugins.preranker import ItemKNN
from reasonrl.gr2_plugins.semantic_ids import RQVAE, RQKMeans, RQVAEParams, SemanticIdParams


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", default="movielens_100k")
    args = parser.parse_args()
    data = load_movielens(args.dataset)
    splits = leave_one_out(k_core(data.sequences, 5))
    catalog = sorted({i for s in splits.values() for i in s.train + [s.valid, s.test]})
    print(f"{args.dataset}: {len(splits)} users, {len(catalog)} items after the 5-core filter\n")
    print("| pre-ranker | test recall@10 | test ndcg@10 |\n|---|---|---|")
    for name, model in (("item-kNN", ItemKNN()), ("popularity", ItemKNN(popularity_weight=1.0, recent=0))):
        model.fit([s.train for s in splits.values()], catalog)
        users = list(splits)
        m = ranking_metrics([model.top_k(splits[u].train + [splits[u].valid], 10) for u in users],
                            [splits[u].test for u in users])
        print(f"| {name} | {m['recall@10']:.4f} | {m['ndcg@10']:.4f} |")
    vectors = embed_texts([data.items[i].text for i in catalog])
    print("\n| tokenizer | levels x codebook | unique raw | unique after collision handling | items moved |\n"
          "|---|---|---|---|---|")
    runs = [(RQKMeans, SemanticIdParams, "rq_kmeans", levels, size) for levels, size in ((4, 64), (4, 256), (3, 256))]
    runs += [(RQVAE, RQVAEParams, "rq_vae", levels, size) for levels, size in ((4, 64), (4, 256))]
    for tokenizer, params, name, levels, size in runs:
        report = tokenizer(params(levels=levels, codebook_size=size)).fit(vectors).report()
        print(f"| {name} | {levels} x {size} | {report['uniqueness_raw']:.4f} | {report['uniqueness']:.4f} | "
              f"{report['moved_by_collision_handling']} of {report['items']} |", flush=True)


if __name__ == "__main__":
    main()
