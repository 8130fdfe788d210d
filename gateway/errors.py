"""Every refusal the gateway makes, as one tree, and how each is drawn in both dialects.

::

    GatewayError(status, code, message)            OpenAI error.code / Anthropic error.type
    ├── BadRequest            400 invalid_request           invalid_request_error
    ├── Unauthorized          401 invalid_api_key           authentication_error
    │     (codes key_revoked, key_expired share the class)
    ├── Forbidden             403 permission_denied         permission_error
    │     (code ip_not_allowed shares the class)
    ├── NotFound              404 not_found                 not_found_error
    │     (code model_not_found shares the class)
    ├── MethodNotAllowed      405 method_not_allowed        invalid_request_error
    ├── RequestTimeout        408 request_timeout           invalid_request_error
    ├── Conflict              409 conflict                  invalid_request_error
    ├── PayloadTooLarge       413 request_too_large         request_too_large
    ├── TooManyRequests       429 rate_limit_exceeded       rate_limit_error   (+ Retry-After)
    ├── StoreUnavailable      503 store_unavailable         api_error
    ├── UpstreamUnavailable   502 upstream_unavailable      overloaded_error
    └── UpstreamTimeout       504 upstream_timeout          api_error

A stage of the request path raises one of these; exactly one middleware renders it. Messages say
what was wrong and what to do, and never contain a secret. This module is pure.
"""

from __future__ import annotations

from typing import Any, ClassVar

import orjson


class GatewayError(Exception):
    """A refusal with an HTTP status, a stable code and a message for the caller."""

    status: int = 500
    default_code: ClassVar[str] = "internal_error"
    openai_type: ClassVar[str] = "server_error"
    anthropic_type: ClassVar[str] = "api_error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        retry_after: int | None = None,
        headers: dict[str, str] | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status  # e.g. 503 rather than 502 when no upstream is healthy
        self.message = message
        self.code = code or self.default_code
        self.param = param
        self.retry_after = retry_after
        self.headers = headers

    def openai_body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.openai_type,
                "param": self.param,
                "code": self.code,
            }
        }

    def anthropic_body(self) -> dict[str, Any]:
        return {"type": "error", "error": {"type": self.anthropic_type, "message": self.message}}

    def render(self, anthropic: bool) -> bytes:
        return orjson.dumps(self.anthropic_body() if anthropic else self.openai_body())

    def response_headers(self) -> dict[str, str]:
        headers = dict(self.headers) if self.headers else {}
        if self.retry_after is not None:
            headers["Retry-After"] = str(max(1, self.retry_after))
        return headers


class BadRequest(GatewayError):
    status = 400
    default_code = "invalid_request"
    openai_type = "invalid_request_error"
    anthropic_type = "invalid_request_error"


class Unauthorized(GatewayError):
    status = 401
    default_code = "invalid_api_key"
    openai_type = "authentication_error"
    anthropic_type = "authentication_error"


class Forbidden(GatewayError):
    status = 403
    default_code = "permission_denied"
    openai_type = "permission_error"
    anthropic_type = "permission_error"


class NotFound(GatewayError):
    status = 404
    default_code = "not_found"
    openai_type = "invalid_request_error"
    anthropic_type = "not_found_error"


class MethodNotAllowed(GatewayError):
    status = 405
    default_code = "method_not_allowed"
    openai_type = "invalid_request_error"
    anthropic_type = "invalid_request_error"


class RequestTimeout(GatewayError):
    status = 408
    default_code = "request_timeout"
    openai_type = "invalid_request_error"
    anthropic_type = "invalid_request_error"


class Conflict(GatewayError):
    status = 409
    default_code = "conflict"
    openai_type = "invalid_request_error"
    anthropic_type = "invalid_request_error"


class PayloadTooLarge(GatewayError):
    status = 413
    default_code = "request_too_large"
    openai_type = "invalid_request_error"
    anthropic_type = "request_too_large"


class TooManyRequests(GatewayError):
    status = 429
    default_code = "rate_limit_exceeded"
    openai_type = "rate_limit_error"
    anthropic_type = "rate_limit_error"


class StoreUnavailable(GatewayError):
    status = 503
    default_code = "store_unavailable"
    openai_type = "server_error"
    anthropic_type = "api_error"


class UpstreamUnavailable(GatewayError):
    status = 502
    default_code = "upstream_unavailable"
    openai_type = "server_error"
    anthropic_type = "overloaded_error"


class UpstreamTimeout(GatewayError):
    status = 504
    default_code = "upstream_timeout"
    openai_type = "server_error"
    anthropic_type = "api_error"


SHOWN = 64  # characters of a client's value a message may quote


def shown(value: str) -> str:
    """A client's value as a message may quote it: a prefix at most, never the whole of a
    value the client made large."""
    return value if len(value) <= SHOWN else value[:SHOWN] + "…"
