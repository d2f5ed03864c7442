import json
import types

import pytest

from reasonrl import hookimpl
from reasonrl.core.config import resolve_config
from reasonrl.core.errors import ReasonRLError
from reasonrl.core.pipeline import run_pipeline
from reasonrl.gr2_plugins.filters import CitesSid, CitesSidParams, Top1Match, ValidFormat
from reasonrl.plugins.teachers import OpenAICompatibleTeacher, OpenAITeacherParams
from reasonrl.testing import JsonHandler, serve_loopback

CANDS = [f"<|sid_begin|><s_a_{i}><s_b_1><|sid_end|>" for i in range(3)]
EXAMPLE = {"prompt": "P", "teacher_prompt": "T", "teacher_prompt_targeted": "T*", "candidates": CANDS, "target_index": 2}


def trace(order, reasoning="I think"):
    return reasoning + "\n" + json.dumps({"explanation": "e", "recommendations": [CANDS[i] for i in order]})


def test_filters():
    assert Top1Match().check(EXAMPLE, trace([2, 0, 1])).accepted
    assert Top1Match().check(EXAMPLE, trace([0, 2, 1])).reason == "top1_mismatch"
    assert ValidFormat().check(EXAMPLE, trace([0, 1])).reason == "missing_items"
    cites = CitesSid(CitesSidParams(min_citations=2))
    assert cites.check(EXAMPLE, trace([2, 0, 1], f"{CANDS[2]} beats {CANDS[0]}")).accepted
    assert not cites.check(EXAMPLE, trace([2, 0, 1], f"only {CANDS[2]}")).accepted


class ScriptedTeacher:
    """Round 1: a wrong top-1 then garbage; round 2: the right answer."""

    calls = []

    def __init__(self, params):
        pass

    def generate(self, prompts, n=1):
        ScriptedTeacher.calls.append(list(prompts))
        right = len(ScriptedTeacher.calls) > 1
        return [[trace([2, 0, 1] if right else [0, 1, 2]), "garbage"][:n] for _ in prompts]


def register_teacher(register_plugin, tmp_path, name, teacher_class):
    """A throwaway plugin offering ``teacher_class`` as ``name``; writes one training example."""
    plugin = types.ModuleType(f"{name}_teacher")

    @hookimpl
    def register_teacher_generators(register):
        register(name, teacher_class)

    plugin.register_teacher_generators = register_teacher_generators
    (tmp_path / "train.jsonl").write_text(json.dumps(EXAMPLE) + "\n")
    return register_plugin(plugin, name=f"{name}_teacher")


@pytest.fixture
def scripted(register_plugin, tmp_path):
    ScriptedTeacher.calls = []
    return register_teacher(register_plugin, tmp_path, "scripted", ScriptedTeacher)


def test_rejection_sampling_retries_until_top1_matches(scripted, tmp_path):
    stage = {"stage": "teacher_traces", "id": "traces", "teacher": "scripted", "samples_per_round": 2,
             "dataset": {"name": "jsonl", "params": {"files": {"train": str(tmp_path / "train.jsonl")}}},
             "progress": False, "lambda_reasoning": 0.3}
    summary = run_pipeline(resolve_config({"run_name": "t", "output_dir": str(tmp_path), "stages": [stage]},
                                          registry=scripted), echo=lambda m: None)["traces"]
    assert summary["accepted"] == 1 and summary["acceptance_rate"] == 1.0
    assert summary["tries_per_accepted"] == 3  # two rejected in round 1, the first of round 2 kept
    assert summary["rejections"] == {"top1_mismatch": 1, "not_json": 1}
    assert ScriptedTeacher.calls == [["T"], ["T"]]  # rejection sampling: the answer is never shown
    record = json.loads((tmp_path / "t" / "traces" / "sft.jsonl").read_text())
    assert record["prompt"] == "P" and record["segments"][0] == ["I think\n", 0.3]
    assert json.loads(record["segments"][1][0])["recommendations"][0] == CANDS[2]


def test_targeted_mode_shows_the_answer(scripted, tmp_path):
    stage = {"stage": "teacher_traces", "id": "traces", "teacher": "scripted", "mode": "targeted",
             "filters": ["valid_format"], "samples_per_round": 1,
             "dataset": {"name": "jsonl", "params": {"files": {"train": str(tmp_path / "train.jsonl")}}},
             "progress": False}
    run_pipeline(resolve_config({"run_name": "t2", "output_dir": str(tmp_path), "stages": [stage]},
                                registry=scripted), echo=lambda m: None)
    assert ScriptedTeacher.calls == [["T*"]]


class FakeChat(JsonHandler):
    failures_left = 0
    seen_auth = []

    def do_POST(self):  # noqa: N802
        body = self.read_json()
        FakeChat.seen_auth.append(self.headers.get("Authorization"))
        if FakeChat.failures_left > 0:
            FakeChat.failures_left -= 1
            self.send_json(None, 503)
            return
        text = "echo: " + body["messages"][-1]["content"]
        self.send_json({"choices": [{"message": {"content": text}} for _ in range(body.get("n", 1))]})


@pytest.fixture
def server():
    with serve_loopback(FakeChat) as url:
        yield url


def test_openai_teacher_retries_caches_and_sends_the_key(server, tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_TEACHER_KEY", "sk-test-secret")
    FakeChat.failures_left, FakeChat.seen_auth = 1, []
    teacher = OpenAICompatibleTeacher(OpenAITeacherParams(base_url=server, model="m", api_key_env="TEST_TEACHER_KEY",
                                                          backoff_seconds=0.01, cache_dir=str(tmp_path / "c")))
    assert teacher.generate(["hi", "yo"], n=2) == [["echo: hi"] * 2, ["echo: yo"] * 2]
    # one 503, then one request per prompt carrying n=2
    assert len(FakeChat.seen_auth) == 3 and set(FakeChat.seen_auth) == {"Bearer sk-test-secret"}
    teacher.generate(["hi"], n=2)
    assert len(FakeChat.seen_auth) == 3  # served from the disk cache
    assert all("sk-test-secret" not in p.read_text() for p in (tmp_path / "c").iterdir())


def test_openai_teacher_gives_up_with_a_clear_error(server, tmp_path):
    FakeChat.failures_left = 99
    teacher = OpenAICompatibleTeacher(OpenAITeacherParams(base_url=server, model="m", retries=2,
                                                          backoff_seconds=0.0, cache_dir=str(tmp_path)))
    with pytest.raises(ReasonRLError, match="failed after 3 tries .HTTP 503"):
        teacher.generate(["x"])
    FakeChat.failures_left = 0


class GarbageTeacher:
    def __init__(self, params):
        pass

    def generate(self, prompts, n=1):
        return [["no answer"] * n for _ in prompts]


def test_no_accepted_trace_stops_with_the_rejection_counts(register_plugin, tmp_path):
    registry = register_teacher(register_plugin, tmp_path, "garbage", GarbageTeacher)
    stage = {"stage": "teacher_traces", "id": "traces", "teacher": "garbage", "samples_per_round": 3,
             "dataset": {"name": "jsonl", "params": {"files": {"train": str(tmp_path / "train.jsonl")}}},
             "progress": False}
    with pytest.raises(ReasonRLError, match=r"no trace accepted for 1 examples \(6 samples; rejections: \{'not_json': 6\}"):
        run_pipeline(resolve_config({"run_name": "g", "output_dir": str(tmp_path), "stages": [stage]},
                                    registry=registry), echo=lambda m: None)


class RightTeacher:
    def __init__(self, params):
        pass

    def generate(self, prompts, n=1):
        return [[trace([2, 0, 1])] * n for _ in prompts]


def test_keep_caps_the_sft_set_and_records_carry_the_answer_alone(register_plugin, tmp_path):
    registry = register_teacher(register_plugin, tmp_path, "right", RightTeacher)
    (tmp_path / "train.jsonl").write_text((json.dumps(EXAMPLE) + "\n") * 5)
    stage = {"stage": "teacher_traces", "id": "traces", "teacher": "right", "keep": 3, "progress": False,
             "dataset": {"name": "jsonl", "params": {"files": {"train": str(tmp_path / "train.jsonl")}}}}
    summary = run_pipeline(resolve_config({"run_name": "k", "output_dir": str(tmp_path), "stages": [stage]},
                                          registry=registry), echo=lambda m: None)["traces"]
    assert summary["accepted"] == 5 and summary["kept"] == 3
    records = [json.loads(line) for line in (tmp_path / "k" / "traces" / "sft.jsonl").read_text().splitlines()]
    assert len(records) == 3
    assert json.loads(records[0]["answer"])["recommendations"] == [CANDS[2], CANDS[0], CANDS[1]]
    assert records[0]["segments"][1][0] == records[0]["answer"]  # the answer segment, without the reasoning


def test_ranking_behaviour_metric():
    from reasonrl.gr2_plugins.rewards import RankingBehaviour

    first = dict(EXAMPLE, target_index=0)
    got = RankingBehaviour()(None, [trace([0, 1, 2]), trace([1, 0, 2]), "nonsense", trace([0, 2, 1])],
                             [first, first, first, EXAMPLE])
    # Kendall's tau against the input order by hand: [1, 0, 2] and [0, 2, 1] have 2 concordant
    # pairs of 3 and 1 discordant -> (2 - 1) / 3
    assert got == [{"identity_copy": 1.0, "first_kept": 1.0, "input_tau": 1.0, "kept_first": 1.0},
                   {"identity_copy": 0.0, "first_kept": 0.0, "input_tau": pytest.approx(1 / 3), "kept_first": 0.0},
                   {"identity_copy": None, "first_kept": None, "input_tau": None, "kept_first": None},
                   {"identity_copy": 0.0, "first_kept": 1.0, "input_tau": pytest.approx(1 / 3), "kept_first": None}]
    from reasonrl.gr2_plugins.rewards import input_order_behaviour

    assert input_order_behaviour([2, 1, 0])["input_tau"] == pytest.approx(-1.0)
