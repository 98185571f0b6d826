"""The small set of errors the service raises; the REST facade maps ``status_code`` to the HTTP answer."""

from __future__ import annotations


class AgaveError(Exception):
    status_code = 500

    def __init__(self, message: str, status_code: int | None = None):
        super().__init__(message)
        self.message = message
        if status_code is not None:
            self.status_code = status_code


class BadRequest(AgaveError):
    status_code = 400


class Unauthorized(AgaveError):
    status_code = 401


class Forbidden(AgaveError):
    status_code = 403


class NotFound(AgaveError):
    status_code = 404


class Conflict(AgaveError):
    status_code = 409


class PreconditionFailed(AgaveError):
    status_code = 412


class TooManyRequests(AgaveError):
    status_code = 429


class IllegalTransition(AgaveError):
    status_code = 400


class StepError(Exception):
    """A lifecycle step failed; its message is written to the job as the reason."""
