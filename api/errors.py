"""A request the server refuses, and the OpenAI-style body that says why."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class ErrorType(StrEnum):
    """OpenAI's ``error.type`` values, the ones a client branches on."""

    INVALID_REQUEST = "invalid_request_error"
    AUTHENTICATION = "authentication_error"
    SERVER = "server_error"  # the server cannot answer now: full, or its loop stopped
    NOT_FOUND = "not_found_error"


@dataclass(eq=False)
class ApiError(Exception):
    """What went wrong with a request, in the shape OpenAI's clients read: the HTTP status,
    a sentence that says what to do, and the parameter at fault (``param``). (Not frozen:
    raising sets an exception's traceback.)"""

    status: int
    message: str
    param: str | None = None
    code: str | None = None
    kind: ErrorType = ErrorType.INVALID_REQUEST
    retry_after: int | None = None  # seconds, for a 503

    def __str__(self) -> str:
        return self.message

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.kind.value,
                "param": self.param,
                "code": self.code,
            }
        }


def bad_request(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, param, code)
