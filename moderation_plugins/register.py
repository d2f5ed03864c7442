"""Registers the moderation pack's components. Imports no torch: factories are lazy."""

from __future__ import annotations

from reasonrl.core.hookspecs import hookimpl

M = "reasonrl.moderation_plugins"


@hookimpl
def register_datasets(register):
    register("spam_email", f"{M}.data:SpamEmail", params=f"{M}.data:SpamParams",
             summary="SpamAssassin emails (6,046), ham vs spam; headers + bounded body")
    register("harmful_response", f"{M}.data:HarmfulResponse", params=f"{M}.data:HarmParams",
             summary="PyRIT human-scored LLM responses (8 harm categories), violating if score >= threshold")
    register("risk_area", f"{M}.data:RiskArea", params=f"{M}.data:ModerationDataParams",
             summary="DoNotAnswer requests, 5-way risk-area classification")
    register("prompt_injection", f"{M}.data:PromptInjection", params=f"{M}.data:ModerationDataParams",
             summary="bastioncorpus inputs, malicious vs benign")
    register("moderation_table", f"{M}.data:UserTable", params=f"{M}.data:ModerationTableParams",
             summary="your labelled texts (CSV / JSON / Parquet) against your policy file; labels checked")


@hookimpl
def register_reward_functions(register):
    register("label_accuracy", f"{M}.rewards:LabelAccuracy", summary="1 if the parsed label is the gold label")
    register("label_balanced", f"{M}.rewards:BalancedLabelAccuracy", params=f"{M}.rewards:BalancedLabelParams",
             summary="1 / (K x class share) if the parsed label is the gold label: no reward for the majority label")
    register("verdict_labels", f"{M}.rewards:VerdictLabels", params=f"{M}.rewards:VerdictLabelsParams",
             summary="metric, not a reward: the share of answers per label and their entropy (rl: metrics); "
                     "stops on a constant starting policy")
    register("verdict_format", f"{M}.rewards:VerdictFormat",
             summary="1 if the answer has reasoning, a known label and a probability")
    register("reasoning_length", f"{M}.rewards:ReasoningLength", params=f"{M}.rewards:ReasoningLengthParams",
             summary="penalty for reasoning outside [min_words, max_words] (against length collapse)")
    register("reasoning_grounding", f"{M}.rewards:ReasoningGrounding",
             summary="metric (rl: metrics): share of the reasoning's words found in the prompt, and whether it "
                     "cites the content (a proxy for made-up reasons)")
    register("rubric_judge", f"{M}.rewards:RubricJudge", params=f"{M}.rewards:RubricJudgeParams",
             summary="LLM-as-judge: mean P(yes) over rubric questions on the reasoning (grounded, faithful, supports)")


@hookimpl
def register_judges(register):
    register("hf", f"{M}.judges:HFJudge", params=f"{M}.judges:HFJudgeParams",
             summary="local causal LM: P(yes) from next-token log-probs (default: packaged SmolLM2-135M-Instruct)")
    register("openai_compatible", f"{M}.judges:OpenAICompatibleJudge", params=f"{M}.judges:OpenAIJudgeParams",
             summary="OpenAI-compatible endpoint: one-token answer with logprobs; key from env, disk cache")


@hookimpl
def register_stages(register):
    register("tfidf_baseline", f"{M}.baseline:TfidfBaseline", params=f"{M}.baseline:BaselineParams",
             summary="reasoning-free floor: TF-IDF + logistic regression, accuracy / F1 / AUC / ECE")
    register("moderation_evaluate", f"{M}.evaluate:ModerationEvaluate", params=f"{M}.evaluate:ModerationEvalParams",
             summary="accuracy, macro-F1, ROC/PR-AUC, ECE, parse failures, reasoning length; MC aggregation; plots")
    register("moderation_warm_start", f"{M}.warm_start:ModerationWarmStart", params=f"{M}.warm_start:WarmStartParams",
             summary="label-only SFT on class-balanced batches; keeps the checkpoint with the best validation "
                     "macro-F1; stops if it answers one label")
    register("moderation_more_sft", f"{M}.warm_start:ModerationMoreSFT", params=f"{M}.warm_start:MoreSFTParams",
             summary="label-only SFT from a model that already classifies, scored at its start too: a control "
                     "beside moderation_rl")
    register("moderation_rl", f"{M}.rl_stage:ModerationRL", params=f"{M}.rl_stage:ModerationRLParams",
             summary="the rl stage, scored on validation at its start and every select_every steps; saves the "
                     "best-scoring policy (the start if no step beat it)")
    register("moderation_traces", f"{M}.traces:ModerationTraces", params=f"{M}.traces:ModerationTracesParams",
             summary="teacher reasoning that quotes the content and the policy clause, kept by rejection filters "
                     "-> SFT data")
    register("moderation_study", f"{M}.study:ModerationStudy", params=f"{M}.study:StudyParams",
             summary="quality vs examples / rollouts / steps: resumable child runs, sigmoid fit, RL-vs-SFT efficiency")


@hookimpl
def register_teacher_generators(register):
    register("policy_rationale", f"{M}.rationales:PolicyRationaleTeacher",
             params=f"{M}.rationales:PolicyRationaleParams",
             summary="rule-based CPU teacher: quotes the content's words that meet a label's definition, and the "
                     "clause they meet")


@hookimpl
def register_rejection_filters(register):
    register("label_matches", f"{M}.traces:LabelMatches", summary="moderation: the trace's verdict is the gold label")
    register("cites_content", f"{M}.traces:CitesContent",
             summary="moderation: the reasoning uses a word only the content has")


@hookimpl
def register_commands(register):
    register("classify", f"{M}.inference:ClassifyCommand",
             summary="classify JSONL texts from stdin against a policy with a trained run")


@hookimpl
def register_serve_endpoints(register):
    register("classify", f"{M}.inference:ClassifyEndpoint",
             summary="POST /v1/classify of reasonrl serve: texts + policy -> reasoning, label, probability")


@hookimpl
def register_decoding_constraints(register):
    register("verdict_close", f"{M}.constraints:VerdictClose", params=f"{M}.constraints:VerdictCloseParams",
             summary="free reasoning that cannot end early; a known label and a probability in [0, 1] always follow")
