"""The one error model: every non-2xx response body is built from a StablegateError."""

from __future__ import annotations

from typing import Any


class StablegateError(Exception):
    """Base class; expected conflicts are 4xx, never 500."""

    status_code = 400
    type = "invalid_request_error"
    code = "invalid_request"
    # The parameter an error of this class is about when the raiser cannot say (a refusal
    # translated from the database carries no parameter of its own).
    default_param: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param if param is not None else self.default_param
        if code is not None:
            self.code = code
        self.headers = headers or {}

    def body(self, request_id: str | None) -> dict[str, Any]:
        return {
            "error": {
                "type": self.type,
                "code": self.code,
                "message": self.message,
                "param": self.param,
                "request_id": request_id,
            }
        }


class InvalidRequest(StablegateError):
    pass


class NotFound(StablegateError):
    status_code = 404
    code = "resource_missing"


class AuthenticationError(StablegateError):
    status_code = 401
    type = "authentication_error"
    code = "invalid_api_key"


class PermissionDenied(StablegateError):
    status_code = 403
    type = "permission_error"
    code = "insufficient_permissions"


class Conflict(StablegateError):
    status_code = 409
    code = "conflict"


class IdempotencyError(StablegateError):
    type = "idempotency_error"
    code = "idempotency_key_reused"


class IdempotencyInUse(StablegateError):
    status_code = 409
    type = "idempotency_error"
    code = "idempotency_key_in_use"


class PayloadTooLarge(StablegateError):
    status_code = 413
    code = "payload_too_large"


class RateLimited(StablegateError):
    status_code = 429
    type = "rate_limit_error"
    code = "rate_limited"


class MethodNotAllowed(StablegateError):
    status_code = 405
    code = "method_not_allowed"


class ServiceUnavailable(StablegateError):
    status_code = 503
    type = "api_error"
    code = "service_unavailable"


class InternalError(StablegateError):
    status_code = 500
    type = "api_error"
    code = "internal_error"
