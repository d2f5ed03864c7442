"""``reasonrl serve``: a real HTTP server on loopback, a real HTTP client (httpx)."""

import io
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import torch

from reasonrl.core.cli import main
from reasonrl.plugins.engine.models import TinyModelParams, save_policy, tiny_model
from reasonrl.plugins.serving.serve import ServedRun, ServeOptions, create_app, start_in_thread
from reasonrl.plugins.serving.serve_openai import Message, chat_text

ASCII = "".join(chr(c) for c in range(32, 127))
ITEMS = {str(i): {"id": str(i), "sid": f"<|sid_begin|><s_a_{i}><|sid_end|>", "title": f"Film {i}", "year": "1999",
                  "genres": ["Drama"]} for i in range(5)}
CAP = 12


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("served") / "myrun"
    model, tokenizer = tiny_model(TinyModelParams(alphabet=ASCII, max_positions=2048), seed=1)
    save_policy(model, tokenizer, folder / "rl" / "model")
    (folder / "prepare").mkdir()
    (folder / "prepare" / "items.jsonl").write_text("".join(json.dumps(i) + "\n" for i in ITEMS.values()))
    return folder


def serve(run_dir, **options):
    served = ServedRun.load(run_dir, None, ServeOptions(**{"max_new_tokens": CAP, **options}), device="cpu")
    server, url = start_in_thread(create_app(served))
    return served, server, url


@pytest.fixture(scope="module")
def server(run_dir):
    served, server, url = serve(run_dir, batch_wait_ms=200, max_batch_size=8)
    yield served, httpx.Client(base_url=url, timeout=60)
    server.should_exit = True


def chat(client, content, **extra):
    body = {"model": "myrun/rl", "messages": [{"role": "user", "content": content}], **extra}
    return client.post("/v1/chat/completions", json=body)


def test_models_and_health(server):
    served, client = server
    assert client.get("/v1/models").json()["data"][0]["id"] == "myrun/rl" == served.name
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["max_batch_size"] == 8


def test_chat_greedy_is_deterministic_and_reports_usage(server):
    _, client = server
    first = chat(client, "hello there", temperature=0, max_tokens=6).json()
    again = chat(client, "hello there", temperature=0, max_tokens=6).json()
    assert first["choices"][0]["message"] == again["choices"][0]["message"]
    assert first["object"] == "chat.completion" and first["model"] == "myrun/rl"
    usage = first["usage"]
    assert usage["prompt_tokens"] == len("hello there") and usage["completion_tokens"] <= 6
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_chat_samples_n_with_a_seed(server):
    _, client = server
    one = chat(client, "abc", n=3, temperature=1.0, seed=7, max_tokens=8).json()
    two = chat(client, "abc", n=3, temperature=1.0, seed=7, max_tokens=8).json()
    assert [c["index"] for c in one["choices"]] == [0, 1, 2]
    assert [c["message"]["content"] for c in one["choices"]] == [c["message"]["content"] for c in two["choices"]]
    assert len({c["message"]["content"] for c in one["choices"]}) > 1  # three samples, not one copied


def test_chat_logprobs_equal_the_model_distribution(server):
    served, client = server
    reply = chat(client, "xyz", temperature=0, max_tokens=3, logprobs=True, top_logprobs=4).json()
    content = reply["choices"][0]["logprobs"]["content"]
    text = chat_text(served.tokenizer, [Message(role="user", content="xyz")])
    prompt = served.tokenizer(text, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = served.model(input_ids=torch.tensor([prompt])).logits[0, -1].float().log_softmax(-1)
    top = logits.topk(4)
    assert [t["token"] for t in content[0]["top_logprobs"]] == [served.tokenizer.decode([int(i)]) for i in top.indices]
    assert [t["logprob"] for t in content[0]["top_logprobs"]] == pytest.approx(top.values.tolist(), abs=1e-5)
    assert content[0]["token"] == content[0]["top_logprobs"][0]["token"]  # greedy took the most likely token
    assert len(content) == reply["usage"]["completion_tokens"]


class Gate:
    """A serve endpoint that holds the generation thread until the test opens it: requests sent
    meanwhile queue up, with no timing window to hit or miss."""

    def __init__(self):
        self.open, self.entered = threading.Event(), threading.Event()

    def hold(self, pool, client):
        """Send one gate request and return once it holds the generation thread."""
        self.entered.clear()
        held = pool.submit(client.post, "/v1/gate", json={})
        assert self.entered.wait(60)
        return held

    def __call__(self, params=None):
        from pydantic import BaseModel

        gate = self

        class GateRequest(BaseModel):
            pass

        class Endpoint:
            request_model = GateRequest

            def prepare(self, served, request):
                return "gate", None

            def run_batch(self, served, key, payloads):
                gate.entered.set()
                gate.open.wait(60)
                return [{"ok": True} for _ in payloads]

        return Endpoint()


@pytest.fixture
def gated(run_dir, register_plugin):
    """A server with the gate endpoint; yields (client, gate, start_options)."""
    from reasonrl import hookimpl

    gate = Gate()

    class Plugin:
        @staticmethod
        @hookimpl
        def register_serve_endpoints(register):
            register("gate", gate, summary="holds the generation thread")

    register_plugin(Plugin(), name="gate-endpoint")
    servers = []

    def start(**options):
        _, server, url = serve(run_dir, **options)
        servers.append(server)
        return httpx.Client(base_url=url, timeout=60)

    yield start, gate
    gate.open.set()
    for server in servers:
        server.should_exit = True


def wait_for_in_flight(client, count):
    for _ in range(600):
        if client.get("/health").json()["in_flight"] >= count:
            return
        time.sleep(0.01)
    raise AssertionError(f"never {count} requests in flight")


def test_requests_queued_behind_a_busy_model_run_as_one_batch_and_answer_as_alone(gated):
    start, gate = gated
    client = start(batch_wait_ms=10, max_batch_size=8)
    prompts = [f"prompt number {i}" for i in range(5)]
    gate.open.set()
    alone = [chat(client, p, temperature=0, max_tokens=6).json()["choices"][0]["message"]["content"] for p in prompts]
    gate.open.clear()
    with ThreadPoolExecutor(6) as pool:
        held = gate.hold(pool, client)
        together = [pool.submit(chat, client, p, temperature=0, max_tokens=6) for p in prompts]
        wait_for_in_flight(client, 6)
        gate.open.set()
        assert held.result().json() == {"ok": True}
        answers = [f.result().json()["choices"][0]["message"]["content"] for f in together]
    assert answers == alone
    assert client.get("/health").json()["largest_batch"] == 5


def test_classify_equals_the_classify_command(server, run_dir, monkeypatch, capsys):
    _, client = server
    texts = ["WIN A PRIZE NOW", "see you at 3"]
    served_results = client.post("/v1/classify", json={"texts": texts, "policy": "spam_email"}).json()
    monkeypatch.setattr("sys.stdin", io.StringIO("".join(json.dumps({"text": t}) + "\n" for t in texts)))
    assert main(["classify", str(run_dir), "--policy", "spam_email", "--max-new-tokens", str(CAP),
                 "--device", "cpu"]) == 0
    command = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert served_results["labels"] == ["ham", "spam"]
    assert [row["line"] for row in command] == [1, 2]
    assert served_results["results"] == [{k: v for k, v in row.items() if k not in ("text", "line")} for row in command]


def test_classify_with_an_inline_policy(server):
    _, client = server
    policy = "---\nlabels: [fine, rude]\n---\nRude replies insult the reader."
    reply = client.post("/v1/classify", json={"texts": ["you fool"], "policy_text": policy}).json()
    assert reply["labels"] == ["fine", "rude"] and len(reply["results"]) == 1


def test_rerank_equals_the_rerank_command(server, run_dir, tmp_path, capsys):
    _, client = server
    request = {"history": ["0", "Film 1"], "candidates": ["2", "3", "4"]}
    served_result = client.post("/v1/rerank", json=request).json()
    batch = tmp_path / "requests.jsonl"
    batch.write_text(json.dumps(request) + "\n")
    status = main(["rerank", str(run_dir), "--batch", str(batch), "--max-new-tokens", str(CAP), "--device", "cpu"])
    command = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert status == (0 if command["ranking"] is not None else 1)
    assert {k: served_result[k] for k in command} == command


@pytest.mark.parametrize("path, body, status, needle", [
    ("/v1/chat/completions", {"model": "myrun/rl"}, 400, "messages"),
    ("/v1/chat/completions", {"model": "other", "messages": [{"role": "user", "content": "x"}]}, 404, "myrun/rl"),
    ("/v1/chat/completions", {"model": "myrun/rl", "messages": [{"role": "user", "content": "x"}],
                              "max_tokens": 999}, 400, "limit 12"),
    ("/v1/chat/completions", {"model": "myrun/rl", "messages": [{"role": "user", "content": "x"}], "n": 99}, 400, "n"),
    ("/v1/chat/completions", {"model": "myrun/rl", "messages": [{"role": "user", "content": "x" * 2040}]}, 400,
     "2048 positions"),
    ("/v1/classify", {"texts": ["x"], "policy": "/etc/passwd.md"}, 400, "unknown policy"),
    ("/v1/classify", {"texts": ["x"]}, 400, "exactly one of policy"),
    ("/v1/classify", {"texts": ["x"], "policy_text": "no front matter"}, 400, "no 'labels:'"),
    ("/v1/rerank", {"history": [], "candidates": ["1", "Flim 3"]}, 400, "film 3"),
])
def test_bad_requests_get_clear_4xx(server, path, body, status, needle):
    _, client = server
    reply = client.post(path, json=body)
    assert reply.status_code == status
    error = reply.json()["error"]
    assert needle in error["message"] and error["type"]


def test_a_body_that_is_not_json_is_a_400(server):
    _, client = server
    reply = client.post("/v1/chat/completions", content=b"{nope", headers={"content-type": "application/json"})
    assert reply.status_code == 400 and "JSON" in reply.json()["error"]["message"]


def test_the_concurrency_limit_answers_429_with_retry_after(gated):
    start, gate = gated
    client = start(max_concurrency=1)
    with ThreadPoolExecutor(1) as pool:
        held = gate.hold(pool, client)
        reply = chat(client, "second", max_tokens=2)
        gate.open.set()
        assert held.result().status_code == 200
    assert reply.status_code == 429 and reply.headers["Retry-After"] == "1"
    assert "limit is 1" in reply.json()["error"]["message"]
    assert chat(client, "third", max_tokens=2).status_code == 200


def test_an_api_key_is_required_when_configured(run_dir, monkeypatch):
    monkeypatch.setenv("SERVE_KEY", "s3cret")
    _, server, url = serve(run_dir, api_key_env="SERVE_KEY")
    try:
        assert httpx.get(url + "/v1/models").status_code == 401
        assert httpx.get(url + "/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert httpx.get(url + "/v1/models", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert httpx.get(url + "/health").status_code == 200  # health stays open for load balancers
    finally:
        server.should_exit = True


def test_a_judge_in_another_run_uses_the_served_model(server, tmp_path):
    """The project's openai_compatible judge (httpx + tenacity client) against the project's own server."""
    from reasonrl.core.config import resolve_config
    from reasonrl.core.pipeline import run_pipeline
    from reasonrl.plugins.tracking.trackers import read_metrics

    served, client = server
    (tmp_path / "policy.md").write_text("---\nlabels: [fine, rude]\n---\nRude replies insult the reader.\n")
    rows = [f"thanks a lot {i},fine" for i in range(6)] + [f"go away fool {i},rude" for i in range(6)]
    (tmp_path / "replies.csv").write_text("text,label\n" + "\n".join(rows) + "\n")
    data = {"name": "moderation_table", "params": {"data_files": str(tmp_path / "replies.csv"),
                                                   "policy": str(tmp_path / "policy.md"), "max_chars": 200}}
    judge = {"name": "openai_compatible", "params": {"base_url": str(client.base_url) + "/v1", "model": served.name,
                                                     "api_key_env": None, "cache_dir": str(tmp_path / "cache")}}
    # a completion that parses (reasoning + label) is what the rubric judge is asked about
    stage = {"stage": "rl", "id": "rl", "model": {"source": "tiny", "tiny": {"alphabet": ASCII,
                                                                                "max_positions": 2048}},
             "dataset": data, "rewards": ["label_accuracy", {"name": "rubric_judge", "params": {"judge": judge}}],
             "rollout": {"name": "hf", "params": {"max_new_tokens": 4}}, "steps": 1, "prompts_per_step": 2,
             "group_size": 2, "progress": False}
    config = resolve_config({"run_name": "judged", "output_dir": str(tmp_path / "runs"), "stages": [stage]})
    asked = []
    from reasonrl.moderation_plugins import judges

    original = judges.OpenAICompatibleJudge.judge_one
    parsed = "It insults the reader.\nLabel: rude\nProbability: 0.9"

    def judge_one(self, prompt):
        asked.append(prompt)
        return original(self, prompt)

    import reasonrl.moderation_plugins.rewards as rewards

    original_parse = rewards.parse_verdict
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(judges.OpenAICompatibleJudge, "judge_one", judge_one)
        # the tiny policy writes no verdict; score every completion as this parsed one so the judge is asked
        patch.setattr(rewards, "parse_verdict", lambda completion, labels: original_parse(parsed, labels))
        before = client.get("/health").json()["served"]
        run_pipeline(config, echo=lambda *_: None)
    served_requests = client.get("/health").json()["served"] - before  # /health itself is not counted
    # every distinct question reached the server (repeats may come from the judge's disk cache)
    assert asked and len(set(asked)) <= served_requests <= len(asked)
    metrics = read_metrics(config.run_dir / "metrics.jsonl")
    assert 0.0 <= metrics[-1]["rl/reward/rubric"] <= 1.0


def test_a_third_party_endpoint_is_served_with_batching(gated, register_plugin):
    """A plugin's serve_endpoints component becomes POST /v1/<name>, validated and batched."""
    from pydantic import BaseModel

    from reasonrl import hookimpl

    class LengthRequest(BaseModel):
        text: str

    class Length:
        request_model = LengthRequest

        def prepare(self, served, request):
            if not request.text:
                from reasonrl.core.errors import ReasonRLError

                raise ReasonRLError("text is empty")
            return "tokens", request.text

        def run_batch(self, served, key, payloads):
            return [{"tokens": len(served.tokenizer(t)["input_ids"]), "batch": len(payloads)} for t in payloads]

    class Plugin:
        @staticmethod
        @hookimpl
        def register_serve_endpoints(register):
            register("length", lambda params: Length(), summary="token count")

    register_plugin(Plugin(), name="length-endpoint")
    start, gate = gated
    client = start()
    with ThreadPoolExecutor(4) as pool:
        held = gate.hold(pool, client)
        queued = [pool.submit(client.post, "/v1/length", json={"text": t}) for t in ["ab", "abc", "a"]]
        wait_for_in_flight(client, 4)
        gate.open.set()
        held.result()
        replies = [f.result().json() for f in queued]
    assert [r["tokens"] for r in replies] == [2, 3, 1] and [r["batch"] for r in replies] == [3, 3, 3]
    assert client.post("/v1/length", json={"text": ""}).json()["error"]["message"] == "text is empty"
    assert client.post("/v1/length", json={}).status_code == 400


def test_serve_threads_are_set_before_the_model_loads(monkeypatch, tmp_path, capsys):
    from reasonrl.core.errors import ReasonRLError
    from reasonrl.plugins.serving import serve

    before = torch.get_num_threads()
    assert main(["serve", str(tmp_path), "--threads", "0"]) == 2
    assert "--threads 0: give at least 1 thread" in capsys.readouterr().err
    seen = []

    def load(*args):
        seen.append(torch.get_num_threads())
        raise ReasonRLError("stop here")

    monkeypatch.setattr(serve.ServedRun, "load", load)
    try:
        assert main(["serve", str(tmp_path), "--threads", "1"]) == 2
    finally:
        torch.set_num_threads(before)
    assert seen == [1] and "stop here" in capsys.readouterr().err


# ---------------------------------------------------------------- the OpenAI client, streams, completions


@pytest.fixture(scope="module")
def openai_client(server):
    openai = pytest.importorskip("openai")
    served, client = server
    return served, openai.OpenAI(base_url=str(client.base_url) + "/v1", api_key="unused", max_retries=0)


def test_the_openai_client_gets_chat_n_and_logprobs(openai_client, server):
    served, oa = openai_client
    reply = oa.chat.completions.create(model=served.name, messages=[{"role": "user", "content": "hello"}],
                                       temperature=0, max_tokens=5, n=2, logprobs=True, top_logprobs=2)
    plain = chat(server[1], "hello", temperature=0, max_tokens=5, n=2).json()
    assert [c.message.content for c in reply.choices] == [c["message"]["content"] for c in plain["choices"]]
    assert len(reply.choices[0].logprobs.content) == reply.usage.completion_tokens // 2
    assert all(len(t.top_logprobs) == 2 for t in reply.choices[0].logprobs.content)


def test_a_streamed_chat_yields_the_same_text_in_chunks(openai_client):
    served, oa = openai_client
    whole = oa.chat.completions.create(model=served.name, messages=[{"role": "user", "content": "stream me"}],
                                       temperature=0, max_tokens=8)
    chunks = list(oa.chat.completions.create(model=served.name, messages=[{"role": "user", "content": "stream me"}],
                                             temperature=0, max_tokens=8, stream=True,
                                             stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content and len(chunks) >= 4
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == whole.choices[0].finish_reason
    assert chunks[-1].usage.total_tokens == whole.usage.total_tokens


def test_completions_echo_the_prompt_log_likelihood_as_the_model_computes_it(openai_client):
    served, oa = openai_client
    prompt = "abc de"
    reply = oa.completions.create(model=served.name, prompt=prompt, max_tokens=0, echo=True, logprobs=1)
    choice = reply.choices[0]
    assert choice.text == prompt
    ids = torch.tensor(served.tokenizer(prompt, add_special_tokens=False)["input_ids"])
    with torch.no_grad():
        logp = served.model(input_ids=ids[None]).logits[0].float().log_softmax(-1)
    expected = [None] + [float(logp[i - 1, ids[i]]) for i in range(1, len(ids))]
    assert choice.logprobs.token_logprobs[0] is None
    assert choice.logprobs.token_logprobs[1:] == pytest.approx(expected[1:], abs=1e-5)
    assert "".join(choice.logprobs.tokens) == prompt
    assert choice.logprobs.text_offset == [sum(map(len, choice.logprobs.tokens[:i])) for i in range(len(ids))]


def test_completions_generate_n_samples_and_stream(openai_client):
    served, oa = openai_client
    reply = oa.completions.create(model=served.name, prompt=["one", "two"], max_tokens=4, n=2, temperature=0)
    assert [c.index for c in reply.choices] == [0, 1, 2, 3]
    assert reply.choices[0].text == reply.choices[1].text  # greedy: both samples agree
    chunks = list(oa.completions.create(model=served.name, prompt="one", max_tokens=4, temperature=0, stream=True))
    assert "".join(c.choices[0].text for c in chunks) == reply.choices[0].text


# ---------------------------------------------------------------- limits and hostile input


def test_a_body_over_the_limit_is_a_413_declared_or_streamed_and_health_stays_quick(run_dir):
    _, server, url = serve(run_dir, max_body_bytes=100_000)
    try:
        client = httpx.Client(base_url=url, timeout=60)
        big = json.dumps({"model": "myrun/rl", "messages": [{"role": "user", "content": "x" * 200_000}]})
        declared = client.post("/v1/chat/completions", content=big, headers={"content-type": "application/json"})
        streamed = client.post("/v1/chat/completions", content=iter([big[:60_000].encode(), big[60_000:].encode()]),
                               headers={"content-type": "application/json"})
        for reply in (declared, streamed):
            assert reply.status_code == 413 and reply.json()["error"]["code"] == "request_too_large"
        # under the byte limit but far over the positions: refused before it is tokenized
        long = chat(client, "y " * 45_000)
        assert long.status_code == 400 and long.json()["error"]["code"] == "context_length_exceeded"
        assert client.get("/health").status_code == 200
    finally:
        server.should_exit = True


@pytest.mark.parametrize("method, path, status", [("GET", "/v1/nowhere", 404), ("GET", "/v1/chat/completions", 405)])
def test_unknown_routes_and_wrong_methods_answer_in_the_openai_shape(server, method, path, status):
    _, client = server
    reply = client.request(method, path)
    assert reply.status_code == status and path in reply.json()["error"]["message"]


def test_a_body_that_is_not_utf8_or_holds_a_lone_surrogate_is_a_400(server):
    _, client = server
    bad_bytes = client.post("/v1/chat/completions", content=b'{"model": "myrun/rl", "messages": "\xff\xfe"}',
                            headers={"content-type": "application/json"})
    assert bad_bytes.status_code == 400 and bad_bytes.json()["error"]["type"] == "invalid_request_error"
    surrogate = '{"model": "myrun/rl", "messages": [{"role": "user", "content": "a\\ud800b"}]}'
    reply = client.post("/v1/chat/completions", content=surrogate, headers={"content-type": "application/json"})
    assert reply.status_code == 400 and "lone surrogate" in reply.json()["error"]["message"]


def test_classify_answers_the_good_texts_of_a_batch_with_one_bad_line(server, run_dir, monkeypatch, capsys):
    _, client = server
    texts = ["fine text", "a\ud800b", "another one"]
    body = json.dumps({"texts": texts, "policy": "spam_email"})  # ensure_ascii keeps the surrogate escaped
    reply = client.post("/v1/classify", content=body, headers={"content-type": "application/json"}).json()
    errors = [r["error"] for r in reply["results"]]
    assert "lone surrogate" in errors[1] and errors[0] != errors[1] and len(errors) == 3
    lines = [json.dumps({"text": t}) for t in texts] + ["not json"]
    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(lines) + "\n"))
    assert main(["classify", str(run_dir), "--policy", "spam_email", "--max-new-tokens", str(CAP),
                 "--device", "cpu"]) == 1
    out = capsys.readouterr()
    rows = [json.loads(line) for line in out.out.strip().splitlines()]
    assert [r["line"] for r in rows] == [1, 2, 3, 4]
    assert "stdin line 2: not valid Unicode text: a lone surrogate" in rows[1]["error"]
    assert "stdin line 4: not JSON" in rows[3]["error"]
    assert [rows[i]["reasoning"] for i in (0, 2)] == [reply["results"][i]["reasoning"] for i in (0, 2)]
    assert "2 of 4 lines could not be classified" in out.err


@pytest.mark.parametrize("candidates, needle", [
    ([str(i % 5) for i in range(3)] + ["2"], "appear more than once"),
    (["0", "1", "2", "3", "4"] * 1, None),
])
def test_rerank_refuses_repeated_candidates(server, candidates, needle):
    _, client = server
    reply = client.post("/v1/rerank", json={"history": [], "candidates": candidates})
    assert reply.status_code == (400 if needle else 200)
    if needle:
        assert needle in reply.json()["error"]["message"]


def test_rerank_refuses_more_candidates_than_trained_and_matches_titles_in_any_normal_form(run_dir, tmp_path):
    import shutil

    from reasonrl.gr2_plugins.inference import Reranker

    folder = tmp_path / "myrun"
    shutil.copytree(run_dir, folder)
    (folder / "config.resolved.yaml").write_text("stages:\n- stage: gr2_prepare\n  id: prepare\n  candidates: 3\n")
    reranker = Reranker.from_run(folder, device="cpu", max_new_tokens=CAP)
    with pytest.raises(Exception, match="4 candidates: this model was trained to rerank at most 3"):
        reranker.check([], ["0", "1", "2", "3"])
    assert reranker.resolve(["ｆｉｌｍ 2 ", "Film\u00a03"], "candidate") == ["2", "3"]  # NFKC, spacing, case
