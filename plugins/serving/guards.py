"""What ``reasonrl serve`` answers before any model work: OpenAI-shaped errors for every failure
(a bad body, an unknown route, a wrong method), the API key, the in-flight limit (429) and the
body-size limit (413)."""

from __future__ import annotations

import json
import secrets

from reasonrl.core.errors import ReasonRLError
from reasonrl.plugins.serving.serve_openai import ApiError


def error_response(exc: ApiError):
    from fastapi.responses import JSONResponse

    headers = {"Retry-After": "1"} if exc.status == 429 else None
    body = {"error": {"message": exc.message, "type": exc.kind, "param": exc.param, "code": exc.code}}
    return JSONResponse(body, status_code=exc.status, headers=headers)


def add_error_handlers(app) -> None:
    from fastapi import Request
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException as StarletteHTTPException

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def bad_body(request: Request, exc: RequestValidationError):
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"] if p != "body")
        return error_response(ApiError(400, f"{where or 'body'}: {first['msg']}", param=where or None))

    @app.exception_handler(ReasonRLError)
    async def bad_request(request: Request, exc: ReasonRLError):
        return error_response(ApiError(400, str(exc)))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}.get(exc.status_code)
        message = {404: f"no route {request.url.path}; see GET /v1/models and the routes in the docs",
                   405: f"{request.method} is not allowed on {request.url.path}"}.get(exc.status_code, str(exc.detail))
        return error_response(ApiError(exc.status_code, message, code=code))


def add_limits(app, options, state: dict) -> None:
    """The body limit, then on /v1/ routes the API key and the in-flight limit."""
    from fastapi import Request

    app.add_middleware(BodyLimit, max_bytes=options.max_body_bytes)

    @app.middleware("http")
    async def concurrency_limit(request: Request, call_next):
        if not request.url.path.startswith("/v1/"):
            return await call_next(request)
        if not key_matches(request, options.api_key_env):
            return error_response(ApiError(401, f"missing or wrong API key: send 'Authorization: Bearer <key>' (the "
                                                f"server reads it from ${options.api_key_env})",
                                           code="invalid_api_key", kind="authentication_error"))
        if state["in_flight"] >= options.max_concurrency:
            return error_response(ApiError(
                429, f"{state['in_flight']} requests in flight, the limit is {options.max_concurrency} "
                     f"(--max-concurrency); retry after a second", code="too_many_requests", kind="rate_limit_error"))
        state["in_flight"] += 1
        try:
            return await call_next(request)
        finally:
            state["in_flight"] -= 1
            state["served"] += 1


def key_matches(request, env: str | None) -> bool:
    import os

    if env is None:
        return True
    expected = os.environ.get(env, "")
    given = request.headers.get("authorization", "")
    return bool(expected) and secrets.compare_digest(given.encode(), f"Bearer {expected}".encode())


class BodyLimit:
    """ASGI middleware: a body over ``max_bytes`` is answered 413 (OpenAI-shaped) as soon as its
    declared length, or the bytes read so far, pass the limit; it is never held whole."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self.refuse(send)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:  # FastAPI passes an HTTPException from here on to the app's handler
                from fastapi import HTTPException

                raise HTTPException(413, self.message())
            return message

        await self.app(scope, counted, send)

    def message(self) -> str:
        return f"the request body is over this server's limit of {self.max_bytes} bytes (--max-body-bytes)"

    async def refuse(self, send) -> None:
        body = json.dumps({"error": {"message": self.message(), "type": "invalid_request_error",
                                     "param": None, "code": "request_too_large"}}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
