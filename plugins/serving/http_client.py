"""An OpenAI-compatible chat-completions client shared by the HTTP teacher and judge.

httpx does the HTTP (it drops ``Authorization`` on a redirect to another host) and
tenacity the retries: transient failures (dropped connections, timeouts, 408/409/425/429
and 5xx, replies without usable content) are retried with jittered exponential backoff,
or after the server's ``Retry-After``. A reply that fails validation is never returned,
so it is never cached either.
"""

from __future__ import annotations

import ipaddress
import os
import warnings
from typing import Any, Callable
from urllib.parse import urlsplit

from reasonrl.core.assets import cache_dir
from reasonrl.core.errors import ReasonRLError

RETRY_STATUS = {408, 409, 425, 429}
MAX_RETRY_AFTER = 120.0


class InvalidReply(Exception):
    """The endpoint answered, but not with something usable; retried like a transient failure."""


class RetryableStatus(Exception):
    def __init__(self, status: int, retry_after: float | None) -> None:
        super().__init__(f"HTTP {status}")
        self.retry_after = retry_after


def require_message_texts(reply: dict) -> None:
    """Every choice holds a message whose content is a string (``null`` is not an answer)."""
    choices = reply.get("choices") if isinstance(reply, dict) else None
    if not choices:
        raise InvalidReply("the reply holds no choices")
    for choice in choices:
        if not isinstance((choice.get("message") or {}).get("content"), str):
            raise InvalidReply("a choice's message content is missing or null")


def is_local_host(host: str) -> bool:
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def warn_if_key_in_clear(url: str, has_key: bool) -> None:
    parts = urlsplit(url)
    if has_key and parts.scheme == "http" and not is_local_host(parts.hostname or ""):
        warnings.warn(f"the API key is sent over plain http to {parts.hostname}; anyone on the path can read it. "
                      f"Use an https:// base_url.", stacklevel=3)


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return min(MAX_RETRY_AFTER, max(0.0, float(value)))
    except ValueError:
        return None  # an HTTP date: fall back to the jittered backoff


def chat_body(params, prompt: str) -> dict:
    """A chat-completions request for one user prompt (``params``: an OpenAI-compatible
    teacher's or judge's params: model, system, temperature, max_tokens)."""
    messages = ([{"role": "system", "content": params.system}] if params.system else [])
    messages.append({"role": "user", "content": prompt})
    return {"model": params.model, "messages": messages, "temperature": params.temperature,
            "max_tokens": params.max_tokens}


def request_key(base_url: str, body: dict) -> str:
    """Disk-cache key of a request: the endpoint and the body (never the key)."""
    import hashlib
    import json

    return hashlib.sha256(json.dumps([base_url, body], sort_keys=True).encode()).hexdigest()


def reply_cache(params):
    """The folder validated replies are cached in: ``cache_dir`` or ``<REASONRL_CACHE>/teacher``."""
    from pathlib import Path

    return Path(params.cache_dir) if params.cache_dir else cache_dir() / "teacher"


class ChatClient:
    """POSTs chat-completion bodies to ``<base_url>/chat/completions``."""

    @classmethod
    def from_params(cls, params) -> "ChatClient":
        return cls(params.base_url, params.api_key_env, params.timeout_seconds, params.retries, params.backoff_seconds)

    def __init__(self, base_url: str, api_key_env: str | None, timeout_seconds: float, retries: int,
                 backoff_seconds: float) -> None:
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.api_key_env = api_key_env
        self.timeout_seconds = timeout_seconds
        self.retries = retries
        self.backoff_seconds = backoff_seconds
        self._client = None

    def _http(self):
        import httpx

        if self._client is None:
            self._client = httpx.Client(timeout=self.timeout_seconds, follow_redirects=True)
        return self._client

    def _headers(self) -> dict[str, str]:
        key = os.environ.get(self.api_key_env or "", "")  # read per call, never stored
        warn_if_key_in_clear(self.url, bool(key))
        return {"Authorization": f"Bearer {key}"} if key else {}

    def post(self, body: dict, validate: Callable[[dict], None] = require_message_texts) -> dict:
        """The endpoint's validated JSON reply to ``body``; raises ReasonRLError after the last try."""
        import httpx
        import tenacity

        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.retries + 1),
            wait=self._wait(tenacity),
            retry=tenacity.retry_if_exception_type((httpx.TransportError, RetryableStatus, InvalidReply)),
            reraise=True,
        )
        try:
            return retrying(self._post_once, body, validate)
        except (httpx.HTTPError, RetryableStatus, InvalidReply) as exc:
            raise ReasonRLError(
                f"endpoint {self.url} failed after {retrying.statistics.get('attempt_number', 1)} tries "
                f"({_describe(exc)}); check base_url, the model name and the key in ${self.api_key_env}") from None

    def _wait(self, tenacity):
        jittered = tenacity.wait_random_exponential(multiplier=self.backoff_seconds, max=60)

        def wait(state) -> float:
            exc = state.outcome.exception() if state.outcome else None
            if isinstance(exc, RetryableStatus) and exc.retry_after is not None:
                return exc.retry_after
            return jittered(state)

        return wait

    def _post_once(self, body: dict, validate: Callable[[dict], None]) -> dict:
        response = self._http().post(self.url, json=body, headers=self._headers())
        if response.status_code in RETRY_STATUS or response.status_code >= 500:
            raise RetryableStatus(response.status_code, parse_retry_after(response.headers.get("Retry-After")))
        response.raise_for_status()  # other 4xx: a client error does not fix itself
        try:
            reply: Any = response.json()
        except ValueError as exc:
            raise InvalidReply(f"the reply is not JSON: {exc}") from None
        validate(reply)
        return reply


def _describe(exc: Exception) -> str:
    import httpx

    if isinstance(exc, httpx.HTTPStatusError):
        return f"HTTP {exc.response.status_code}"
    return str(exc) if isinstance(exc, (RetryableStatus, InvalidReply)) else f"{type(exc).__name__}: {exc}"
