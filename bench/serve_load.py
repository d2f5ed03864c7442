"""``reasonrl serve`` under hostile load: concurrent chat and rerank requests mixed with 10 MB
bodies, while ``/health`` is polled. The server runs in its own process on a tiny model (the
server's behaviour, not the model's speed, is measured). Prints a table: answers by status,
the slowest health answer, and the server's resident memory before, at the peak and after.

    python bench/serve_load.py                       # 50 requests: 20 chat, 20 rerank, 10 bodies of 10 MB
    python bench/serve_load.py --requests 200
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil

ALPHABET = "".join(chr(c) for c in range(32, 127))
BIG = 10_000_000


def tiny_run(folder: Path) -> Path:
    """A run folder a server can load: a tiny model and a five-item catalogue."""
    from reasonrl.plugins.engine.models import TinyModelParams, save_policy, tiny_model

    run = folder / "loadrun"
    model, tokenizer = tiny_model(TinyModelParams(alphabet=ALPHABET, max_positions=2048), seed=1)
    save_policy(model, tokenizer, run / "rl" / "model")
    (run / "prepare").mkdir(parents=True)
    items = [{"id": str(i), "sid": f"<|sid_begin|><s_a_{i}><|sid_end|>", "title": f"Film {i}", "year": "1999",
              "genres": ["Drama"]} for i in range(5)]
    (run / "prepare" / "items.jsonl").write_text("".join(json.dumps(i) + "\n" for i in items))
    return run


def request_plan(count: int) -> list[tuple[str, str, bytes]]:
    """(kind, path, body): 40% chat, 40% rerank, 20% bodies of 10 MB, interleaved."""
    chat = json.dumps({"model": "loadrun/rl", "messages": [{"role": "user", "content": "hello"}],
                       "max_tokens": 8}).encode()
    rerank = json.dumps({"history": ["0"], "candidates": ["1", "2", "3"]}).encode()
    big = json.dumps({"model": "loadrun/rl", "messages": [{"role": "user", "content": "x" * BIG}]}).encode()
    kinds = [("chat", "/v1/chat/completions", chat), ("rerank", "/v1/rerank", rerank)] * 2 + \
            [("10 MB body", "/v1/chat/completions", big)]
    return [kinds[i % len(kinds)] for i in range(count)]


class HealthPoller:
    """Asks /health every 50 ms on its own connection and keeps the slowest answer's time."""

    def __init__(self, url: str) -> None:
        self.url, self.slowest, self.answers, self.failures = url, 0.0, 0, 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.poll, daemon=True)

    def poll(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            while not self.stop.is_set():
                started = time.perf_counter()
                ok = client.get("/health").status_code == 200
                self.slowest = max(self.slowest, time.perf_counter() - started)
                self.answers += ok
                self.failures += not ok
                time.sleep(0.05)


def free_port() -> int:
    with socket.socket() as probe:  # the OS picks a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(run: Path) -> tuple[subprocess.Popen, str]:
    """``reasonrl serve`` in its own process (its memory and event loop are what is measured)."""
    port = free_port()
    command = [sys.executable, "-m", "reasonrl", "serve", str(run), "--port", str(port), "--device", "cpu",
               "--max-new-tokens", "16", "--threads", "1"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.2)
        if process.poll() is not None:
            break
    process.kill()
    raise RuntimeError(f"reasonrl serve did not start: {' '.join(command)}")


def measure(requests: int = 50) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        process, url = start_server(tiny_run(Path(tmp)))
        server = psutil.Process(process.pid)
        try:
            with httpx.Client(base_url=url, timeout=120) as client:
                for kind, path, body in request_plan(5)[:2]:  # warm-up: first batches allocate
                    client.post(path, content=body, headers={"content-type": "application/json"})
            start = peak = server.memory_info().rss
            poller = HealthPoller(url)
            poller.thread.start()

            def send(plan):
                nonlocal peak
                kind, path, body = plan
                with httpx.Client(base_url=url, timeout=120) as client:
                    status = client.post(path, content=body, headers={"content-type": "application/json"}).status_code
                peak = max(peak, server.memory_info().rss)
                return kind, status

            with ThreadPoolExecutor(requests) as pool:
                answers = list(pool.map(send, request_plan(requests)))
            time.sleep(1.0)  # let the last batch's buffers go
            poller.stop.set()
            poller.thread.join()
            after = server.memory_info().rss
        finally:
            process.terminate()
            process.wait(timeout=30)
    return {"answers": Counter(answers), "server_errors": sum(s >= 500 for _, s in answers),
            "health_slowest_s": poller.slowest, "health_answers": poller.answers, "health_failures": poller.failures,
            "rss_start_mb": start / 2**20, "rss_peak_mb": peak / 2**20, "rss_after_mb": after / 2**20}


def table(result: dict) -> str:
    rows = ["| requests | status | count |", "|---|---|---|"]
    rows += [f"| {kind} | {status} | {n} |" for (kind, status), n in sorted(result["answers"].items())]
    rows += ["", "| measure | value |", "|---|---|",
             f"| 5xx answers | {result['server_errors']} |",
             f"| slowest /health answer (s) | {result['health_slowest_s']:.3f} |",
             f"| /health answers during the load | {result['health_answers']} ({result['health_failures']} failed) |",
             f"| RSS before the load (MB) | {result['rss_start_mb']:.0f} |",
             f"| RSS peak (MB) | {result['rss_peak_mb']:.0f} |",
             f"| RSS after the load (MB) | {result['rss_after_mb']:.0f} "
             f"({result['rss_after_mb'] / result['rss_start_mb']:.2f}x the start) |"]
    return "\n".join(rows)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=50)
    args = parser.parse_args(argv)
    print(table(measure(args.requests)))


if __name__ == "__main__":
    main()
