"""Registers the GR2 reranker's components. Imports no torch: factories are lazy."""

from __future__ import annotations

from reasonrl.core.hookspecs import hookimpl
from reasonrl.gr2_plugins import params as p

G = "reasonrl.gr2_plugins"


@hookimpl
def register_item_tokenizers(register):
    register("rq_kmeans", f"{G}.semantic_ids:RQKMeans", params=p.SemanticIdParams,
             summary="residual k-means semantic IDs with free-last-code collision handling")
    register("rq_vae", f"{G}.semantic_ids:RQVAE", params=p.RQVAEParams,
             summary="RQ-VAE semantic IDs: EMA codebooks, free-last-code collision handling")


@hookimpl
def register_reward_functions(register):
    register("rank", f"{G}.rewards:RankReward", summary="GR2 R_rank = (pos_in - pos_out) / |D| of the held-out item")
    register("format", f"{G}.rewards:FormatReward", summary="1 if the answer parses to a permutation of the candidates")
    register("rank_auc", f"{G}.rewards:AUCReward", summary="share of candidates ranked below the held-out item")
    register("rank_ndcg", f"{G}.rewards:NDCGReward", summary="1 / log2(1 + output position) of the held-out item")
    register("rank_topk", f"{G}.rewards:TopKReward", params=p.TopKParams,
             summary="1 if the held-out item is in the output's top k (OneRec-Think-style)")


@hookimpl
def register_reward_combiners(register):
    register("conditional_rank", f"{G}.rewards:ConditionalRank", params=p.ConditionalRankParams,
             summary="GR2: format bonus only when the target moved up (or stayed first); invalid -> -1")
