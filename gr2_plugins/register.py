"""Registers the GR2 reranker's components. Imports no torch: factories are lazy."""

from __future__ import annotations

from reasonrl.core.hookspecs import hookimpl

G = "reasonrl.gr2_plugins"


@hookimpl
def register_item_tokenizers(register):
    register("rq_kmeans", f"{G}.semantic_ids:RQKMeans", params=f"{G}.semantic_ids:SemanticIdParams",
             summary="residual k-means semantic IDs with free-last-code collision handling")
    register("rq_vae", f"{G}.semantic_ids:RQVAE", params=f"{G}.semantic_ids:RQVAEParams",
             summary="RQ-VAE semantic IDs: EMA codebooks, free-last-code collision handling")


@hookimpl
def register_reward_functions(register):
    register("rank", f"{G}.rewards:RankReward", summary="GR2 R_rank = (pos_in - pos_out) / |D| of the held-out item")
    register("ranking_behaviour", f"{G}.rewards:RankingBehaviour",
             summary="metric, not a reward: identity-copy and kept-first of valid rankings (rl: metrics)")
    register("format", f"{G}.rewards:FormatReward", summary="1 if the answer parses to a permutation of the candidates")
    register("rank_auc", f"{G}.rewards:AUCReward", summary="share of candidates ranked below the held-out item")
    register("rank_ndcg", f"{G}.rewards:NDCGReward", summary="1 / log2(1 + output position) of the held-out item")
    register("rank_gain", f"{G}.rewards:RankGainReward", params=f"{G}.rewards:RankGainParams",
             summary="NDCG@k of the answer minus NDCG@k of the input order: zero for a copy")
    register("co_watching_copy", f"{G}.rewards:CoWatchingCopyReward",
             summary="1 if the answer starts with the co-watching rule's top three (reads no target; a probe)")
    register("rank_topk", f"{G}.rewards:TopKReward", params=f"{G}.rewards:TopKParams",
             summary="1 if the held-out item is in the output's top k (OneRec-Think-style)")


@hookimpl
def register_reward_combiners(register):
    register("conditional_rank", f"{G}.rewards:ConditionalRank", params=f"{G}.rewards:ConditionalRankParams",
             summary="GR2: format bonus only when the target moved up (or stayed first); invalid -> -1")


@hookimpl
def register_stages(register):
    register("gr2_prepare", f"{G}.prepare:GR2Prepare", params=f"{G}.prepare:GR2PrepareParams",
             summary="GR2 data: 5-core leave-one-out, pre-ranker top-k, semantic IDs, prompts, corpus")
    register("teacher_traces", f"{G}.traces:TeacherTraces", params=f"{G}.traces:TeacherTracesParams",
             summary="teacher reasoning traces kept by rejection filters -> weighted SFT data")
    register("gr2_evaluate", f"{G}.evaluate:GR2Evaluate", params=f"{G}.evaluate:GR2EvaluateParams",
             summary="R@K / NDCG@K with bootstrap CIs, copy and parse-failure rates; report.md/.json/.png")


@hookimpl
def register_rejection_filters(register):
    register("valid_format", f"{G}.filters:ValidFormat", summary="the answer parses to a permutation of the candidates")
    register("top1_match", f"{G}.filters:Top1Match", summary="GR2: the trace's top-1 is the held-out item")
    register("improves_input", f"{G}.filters:ImprovesInput",
             summary="the trace moves the held-out item up, or keeps it first where it was first")
    register("cites_sid", f"{G}.filters:CitesSid", params=f"{G}.filters:CitesSidParams",
             summary="the reasoning cites candidates by semantic ID")


@hookimpl
def register_teacher_generators(register):
    register("taste_profile", f"{G}.taste_teacher:TasteProfileTeacher", params=f"{G}.taste_teacher:TasteTeacherParams",
             summary="rule-based CPU teacher: genre/era profile + Gumbel noise, reasoning cites SIDs")
    register("feature_ranker", f"{G}.feature_teacher:FeatureRankerTeacher",
             params=f"{G}.feature_teacher:FeatureTeacherParams",
             summary="index prompts: orders by the evidence model's score + Gumbel noise, cites the evidence")


@hookimpl
def register_decoding_constraints(register):
    register("sid_trie", f"{G}.constraints:SIDTrie", params=f"{G}.constraints:SIDTrieParams",
             summary="SIDs decode under a trie of the prompt's items; the answer lists each candidate once and "
                     "always parses once begun; close_at_budget: the answer is begun in time")
    register("index_list", f"{G}.constraints:IndexList", params=f"{G}.constraints:IndexListParams",
             summary="index answers: the list holds distinct candidate numbers only and always parses once begun")


@hookimpl
def register_metrics(register):
    register("ranking", f"{G}.metrics:RankingMetric", summary="recall@K and ndcg@K, K in 1, 3, 5, 10 (one relevant item)")


@hookimpl
def register_commands(register):
    register("rerank", f"{G}.inference:RerankCommand",
             summary="rerank a user's candidates with a trained GR2 run, reasoning shown")
    register("gr2-table", f"{G}.data:ExportTableCommand",
             summary="write a fetched MovieLens as a plain interactions CSV (the own-data format)")


@hookimpl
def register_serve_endpoints(register):
    register("rerank", f"{G}.inference:RerankEndpoint",
             summary="POST /v1/rerank of reasonrl serve: history + candidates -> ranking with reasoning")
