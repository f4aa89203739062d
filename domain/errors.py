"""Why a command was refused, in the domain's own words.

The web layer maps each class to an HTTP status; the domain never speaks HTTP.
"""


class DomainError(Exception):
    """A command was refused; ``message`` is what the client reads."""

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class NotFound(DomainError):
    """The addressed entity does not exist."""


class Conflict(DomainError):
    """The change collides with existing state (a duplicate, a dangling reference)."""


class Forbidden(DomainError):
    """The entity exists but may not be changed this way (immutable entities)."""


class BadRequest(DomainError):
    """The request is malformed or misses something it must carry."""


class Unprocessable(DomainError):
    """The request is well-formed but its values cannot be accepted."""


class Unauthorized(DomainError):
    """The request does not prove who sent it (a webhook signature that does not verify)."""


class TokenRejected(Unauthorized):
    """No token, or one that does not verify (malformed, tampered with, expired, of another algorithm)."""


class PermissionDenied(Forbidden):
    """The caller is known but holds no entry granting what the operation needs."""


class TooLarge(DomainError):
    """The request, or an event it would append, is larger than the log takes."""


class Unavailable(DomainError):
    """The request is sound but cannot be served now (every backend able to is down or not ready);
    ``retry_after``: seconds after which trying again makes sense."""

    def __init__(self, message: str, *, retry_after: float = 1.0, param: str | None = None) -> None:
        super().__init__(message, param=param)
        self.retry_after = retry_after


class UpstreamRefused(DomainError):
    """An upstream server (an LLM backend) answered but refused the request or gave nothing usable."""
