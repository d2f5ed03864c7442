"""The policy_rationale teacher and the moderation_traces stage: SFT targets whose reasoning
quotes the content and the policy clause it meets, kept by rejection filters."""

import json

import pytest

from reasonrl.core.config import resolve_config
from reasonrl.core.errors import ReasonRLError
from reasonrl.core.pipeline import run_pipeline
from reasonrl.moderation_plugins.parsing import parse_verdict
from reasonrl.moderation_plugins.prompts import classifier_prompt, load_policy_document
from reasonrl.moderation_plugins.rationales import (PolicyRationaleParams, PolicyRationaleTeacher, clauses,
                                                     label_definitions, teacher_prompt)
from reasonrl.moderation_plugins.traces import CitesContent, LabelMatches

POLICY = """---
labels: [allowed, violating]
---
A text is **violating** when it praises weapons, sells counterfeit watches, or threatens neighbours.

A text is **allowed** when it describes gardens, recipes or holidays.
"""
LABELS = ["allowed", "violating"]


def example(content: str, label: str) -> dict:
    body = POLICY.split("---", 2)[2].strip()
    return {"prompt": classifier_prompt(body, content, LABELS), "content": content, "label": label, "labels": LABELS}


def test_label_definitions_are_the_paragraphs_that_bold_each_label():
    _, body = load_policy_document("prompt_injection")
    found = label_definitions(body, ["benign", "malicious"])
    assert found["malicious"].startswith("when it tries to make an LLM application ignore or override")
    assert found["benign"].startswith("when it is an ordinary request")
    assert label_definitions(POLICY, LABELS)["violating"] == (
        "when it praises weapons, sells counterfeit watches, or threatens neighbours.")


def test_clauses_cut_a_definition_at_commas_and_ors():
    assert clauses("when it praises weapons, sells counterfeit watches, or threatens neighbours.") == [
        "praises weapons", "sells counterfeit watches", "threatens neighbours"]
    assert clauses("a b c d e f g h i j k l", max_words=4) == ["a b c d"]


def test_a_targeted_trace_quotes_the_content_and_the_clause_it_meets():
    item = example("Buy cheap counterfeit watches today from our shop", "violating")
    teacher = PolicyRationaleTeacher(PolicyRationaleParams(quote_words=4))
    trace = teacher.generate([teacher_prompt(item, targeted=True)], 1)[0][0]
    verdict = parse_verdict(trace, LABELS)
    assert (verdict.label, verdict.probability, verdict.error) == ("violating", 0.9, None)
    quote = trace.split('"')[1]
    assert quote in item["content"] and "counterfeit watches" in quote
    assert '"sells counterfeit watches"' in trace  # the clause whose words the quote shares
    assert LabelMatches().check(item, trace).accepted and CitesContent().check(item, trace).accepted
    allowed = example("A recipe for lemon cake with garden mint", "allowed")
    trace = teacher.generate([teacher_prompt(allowed, targeted=True)], 1)[0][0]
    assert parse_verdict(trace, LABELS).probability == pytest.approx(0.1)  # P(violating) for an allowed text


def test_without_the_gold_label_it_guesses_by_overlap_with_each_definition():
    teacher = PolicyRationaleTeacher(PolicyRationaleParams(temperature=0))
    for content, expected in (("they threatens neighbours with weapons", "violating"),
                              ("holidays in gardens, with recipes", "allowed")):
        trace = teacher.generate([teacher_prompt(example(content, "allowed"), targeted=False)], 1)[0][0]
        assert parse_verdict(trace, LABELS).label == expected
    wrong = example("they threatens neighbours with weapons", "allowed")
    trace = teacher.trace(teacher_prompt(wrong, targeted=False))
    assert LabelMatches().check(wrong, trace).reason == "wrong_label" and not LabelMatches().check(wrong, trace).accepted


def test_a_policy_without_bold_definitions_is_refused_with_the_fix():
    item = example("some text", "allowed")
    item["prompt"] = classifier_prompt("Texts that praise weapons violate it.", "some text", LABELS)
    with pytest.raises(ReasonRLError, match=r"bolds no definition for \['allowed', 'violating'\].*\*\*allowed\*\*"):
        PolicyRationaleTeacher().trace(teacher_prompt(item, targeted=True))


def test_the_stage_keeps_matching_traces_as_weighted_sft_rows_that_the_sft_stage_reads(tmp_path):
    (tmp_path / "policy.md").write_text(POLICY)
    rows = [{"text": "selling counterfeit watches here", "label": "violating"},
            {"text": "my neighbours threatens me with weapons daily", "label": "violating"},
            {"text": "recipes for holidays in the gardens tonight", "label": "allowed"},
            {"text": "counterfeit watches and weapons praises", "label": "allowed"},  # the guess gets it wrong
            {"text": "weapons, neighbours", "label": "violating"}]  # every word is also the policy's
    table = tmp_path / "train.jsonl"
    table.write_text("".join(json.dumps(r) + "\n" for r in rows))
    test = tmp_path / "test.jsonl"
    test.write_text("".join(json.dumps(r) + "\n" for r in rows[:2]))
    data = {"name": "moderation_table", "params": {"data_files": {"train": str(table), "test": str(test)},
                                                    "policy": str(tmp_path / "policy.md")}}
    tiny = {"source": "tiny", "tiny": {"alphabet": "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,:;'<>\n-_()?!/*#\"=",
                                       "hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64,
                                       "max_positions": 1024}}
    stages = [{"stage": "moderation_traces", "id": "traces", "dataset": data, "mode": "rejection", "max_rounds": 1,
               "samples_per_round": 1, "teacher": {"name": "policy_rationale", "params": {"temperature": 0}},
               "progress": False},
              {"stage": "sft", "id": "sft", "model": tiny, "dataset": {"name": "jsonl", "params": {
                  "files": {"train": "traces/sft.jsonl"}}}, "batch_size": 2, "epochs": 1, "progress": False}]
    config = resolve_config({"run_name": "traces", "output_dir": str(tmp_path), "seed": 0, "stages": stages})
    outputs = run_pipeline(config, echo=lambda m: None)
    summary = outputs["traces"]
    assert (summary["examples"], summary["kept"], summary["rejections"]) == (5, 3, {"wrong_label": 1, "does_not_cite_content": 1})
    kept = [json.loads(line) for line in (config.run_dir / "traces" / "sft.jsonl").read_text().splitlines()]
    assert [row["content"] for row in kept] == [r["text"] for r in rows[:3]]
    for row in kept:
        (reasoning, w_reasoning), (verdict, w_verdict) = row["segments"]
        assert reasoning + verdict == row["completion"] and verdict.startswith("Label: " + row["label"])
        assert (w_reasoning, w_verdict) == (0.5, 1.0) and reasoning.startswith('The content says "')
    assert outputs["sft"]["steps"] == 1 and outputs["sft"]["loss_first"] > 0  # int(3 rows x 1 epoch / 2)
