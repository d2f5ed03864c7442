"""Helpers for tests of plugins: drive a decoding constraint at random, pick a free port, and
serve a fake JSON endpoint on loopback (importable without pytest)."""

from __future__ import annotations

import contextlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def random_decode(rule, tokenizer, budget: int, rng, free_pool=None) -> tuple[str, int]:
    """Text a policy that picks uniformly among the tokens ``rule`` allows writes within
    ``budget`` tokens (``free_pool``: the ids it picks from where the rule leaves the choice
    free, default the whole vocabulary), and how many tokens it wrote."""
    from reasonrl.plugins.engine.rollout import Excluding  # torch: only where a test decodes

    if hasattr(rule, "set_budget"):
        rule.set_budget(budget)
    pool = list(range(len(tokenizer))) if free_pool is None else list(free_pool)
    out: list[int] = []
    while len(out) < budget:
        allowed = rule.allowed()
        if allowed is None or isinstance(allowed, Excluding):  # any token, or all but a few
            banned = set(allowed or ())
            token = rng.choice([i for i in pool if i not in banned])
        else:
            token = rng.choice(list(allowed))
        if token == tokenizer.eos_token_id:
            break
        rule.advance(token)
        out.append(token)
    return tokenizer.decode(out), len(out)


def free_port(host: str = "127.0.0.1") -> int:
    """A port no one listens on now (the OS picks it), for a launcher that needs a number:
    fixed ports collide when two test runs share a machine."""
    import socket

    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


class JsonHandler(BaseHTTPRequestHandler):
    """Base of fake JSON endpoints: ``read_json()`` the request body, ``send_json(data)`` a reply."""

    def read_json(self):
        return json.loads(self.rfile.read(int(self.headers["Content-Length"])))

    def send_json(self, data, status: int = 200, headers: dict | None = None) -> None:
        body = json.dumps(data).encode() if data is not None else b""
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def serve_loopback(handler: type[BaseHTTPRequestHandler], host: str = "127.0.0.1"):
    """Serve ``handler`` on a free port of ``host`` in a thread; yields the base URL (``.../v1``)."""
    httpd = ThreadingHTTPServer((host, 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://{host}:{httpd.server_port}/v1"
    finally:
        httpd.shutdown()
        httpd.server_close()
