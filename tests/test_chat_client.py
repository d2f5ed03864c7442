"""The OpenAI-compatible client shared by the HTTP teacher and judge, against loopback servers."""

import time
import warnings

import pytest

from reasonrl.core.errors import ReasonRLError
from reasonrl.plugins.serving.http_client import ChatClient, warn_if_key_in_clear
from reasonrl.plugins.teachers import OpenAICompatibleTeacher, OpenAITeacherParams
from reasonrl.testing import JsonHandler, serve_loopback


class Scripted(JsonHandler):
    """Answers each POST with the next scripted action; then with n echo choices."""

    script: list = []
    seen: list = []
    redirect_to = ""

    def do_POST(self):  # noqa: N802
        body = self.read_json()
        type(self).seen.append({"auth": self.headers.get("Authorization"), "body": body, "time": time.monotonic()})
        action = type(self).script.pop(0) if type(self).script else "ok"
        if action == "drop":  # close the connection without answering (RemoteDisconnected)
            self.close_connection = True
            self.connection.shutdown(2)
        elif action == "redirect":
            self.send_json(None, 307, {"Location": type(self).redirect_to})
        elif isinstance(action, tuple):  # (status, retry_after)
            self.send_json(None, action[0], {"Retry-After": action[1]})
        else:
            content = None if action == "null" else f"echo {body['messages'][-1]['content']}"
            self.send_json({"choices": [{"message": {"content": content}} for _ in range(body.get("n", 1))]})


@pytest.fixture
def endpoint():
    handler = type("Handler", (Scripted,), {"script": [], "seen": []})
    with serve_loopback(handler) as url:
        yield handler, url


def teacher(url, tmp_path, **extra):
    params = dict(base_url=url, model="m", backoff_seconds=0.0, cache_dir=str(tmp_path / "cache"), **extra)
    return OpenAICompatibleTeacher(OpenAITeacherParams(**params))


def test_n_samples_go_in_one_request(endpoint, tmp_path):
    handler, url = endpoint
    assert teacher(url, tmp_path).generate(["a", "b"], n=3) == [["echo a"] * 3, ["echo b"] * 3]
    assert sorted(s["body"]["n"] for s in handler.seen) == [3, 3]


def test_null_content_is_retried_and_never_cached(endpoint, tmp_path):
    handler, url = endpoint
    handler.script = ["null"]
    assert teacher(url, tmp_path).generate(["a"]) == [["echo a"]]
    assert len(handler.seen) == 2
    handler.script = ["null"] * 9
    with pytest.raises(ReasonRLError, match="failed after 3 tries .*null"):
        teacher(url, tmp_path, retries=2).generate(["b"])
    handler.script = []
    assert teacher(url, tmp_path).generate(["b"]) == [["echo b"]]  # the server recovered; nothing bad was cached


def test_dropped_connection_is_retried(endpoint, tmp_path):
    handler, url = endpoint
    handler.script = ["drop"]
    assert teacher(url, tmp_path).generate(["a"]) == [["echo a"]]
    assert len(handler.seen) == 2


def test_retry_after_is_honoured(endpoint, tmp_path):
    handler, url = endpoint
    handler.script = [(429, "0.4")]
    assert teacher(url, tmp_path).generate(["a"]) == [["echo a"]]
    assert handler.seen[1]["time"] - handler.seen[0]["time"] >= 0.4


def test_backoff_is_jittered_and_bounded():
    import tenacity

    client = ChatClient("http://127.0.0.1:1/v1", None, 1.0, 5, backoff_seconds=1.0)
    wait = client._wait(tenacity)

    def waits():
        out = []
        for attempt in range(1, 6):
            state = type("State", (), {"attempt_number": attempt, "outcome": None})()
            out.append(wait(state))
        return out

    first, second = waits(), waits()
    assert first != second  # random, so concurrent clients do not retry in lockstep
    assert all(0 <= w <= 2 ** (a + 1) for a, w in enumerate(first))


def test_key_is_not_forwarded_to_another_host_on_redirect(endpoint, tmp_path, monkeypatch):
    handler, url = endpoint
    other = type("Other", (Scripted,), {"script": [], "seen": []})
    with serve_loopback(other) as other_url:
        handler.script = ["redirect"]
        # same machine, another host name: a different origin for the client
        handler.redirect_to = other_url.replace("127.0.0.1", "localhost") + "/chat/completions"
        monkeypatch.setenv("TEST_KEY", "sk-secret")
        assert teacher(url, tmp_path, api_key_env="TEST_KEY").generate(["a"]) == [["echo a"]]
    assert handler.seen[0]["auth"] == "Bearer sk-secret"
    assert other.seen[0]["auth"] is None
    assert all("sk-secret" not in p.read_text() for p in (tmp_path / "cache").iterdir())


def test_key_over_plain_http_to_a_remote_host_warns():
    with pytest.warns(UserWarning, match="plain http to api.example.com"):
        warn_if_key_in_clear("http://api.example.com/v1/chat/completions", True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for url in ("https://api.example.com/v1", "http://127.0.0.1:8000/v1", "http://localhost/v1", "http://[::1]/v1"):
            warn_if_key_in_clear(url, True)
        warn_if_key_in_clear("http://api.example.com/v1", False)


def test_client_error_is_not_retried(endpoint, tmp_path):
    handler, url = endpoint
    handler.script = [(400, "0")]
    with pytest.raises(ReasonRLError, match="failed after 1 tries .HTTP 400"):
        teacher(url, tmp_path).generate(["a"])
