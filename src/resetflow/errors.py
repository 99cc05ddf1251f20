"""The domain exception tree, with stable codes. The HTTP status of each is chosen at the
edge (web/error_json.py); shown here in brackets for orientation.

::

    ResetflowError
    ├── InvalidInput (422)         field problems, with ``fields``
    │   └── PasswordRejected       the password policy said no, with reasons
    ├── MalformedRequest (400)     not JSON, wrong shape
    ├── UnsupportedMediaType (415)
    ├── PayloadTooLarge (413)
    ├── InvalidCode (400)          wrong, expired, used or unknown: one answer for all
    ├── InvalidCredentials (401)   wrong password or unknown account: one answer for both
    ├── NotSignedIn (401)
    ├── ResetNotAllowed (403)      /reset-password without a fresh verified code
    ├── Forbidden (403)            CSRF or cross-site request
    ├── WebhookRefused (403)       a provider webhook without a valid signature or secret
    ├── AdminTokenInvalid (401)    operator API without a valid bearer token
    ├── UserNotFound (404)         operator API: no account with that id
    ├── ContactTaken (409)         operator API: the email or phone has an account
    ├── UnsupportedPasswordHash (422)  operator API: a password_hash in no accepted format
    ├── RateLimited (429)          too many requests from this client or overall
    └── ServiceUnavailable (503)
"""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    """Stable machine-readable error codes; clients may rely on them."""

    INVALID_INPUT = "invalid_input"
    WEAK_PASSWORD = "weak_password"
    MALFORMED_REQUEST = "malformed_request"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    INVALID_CODE = "invalid_code"
    INVALID_CREDENTIALS = "invalid_credentials"
    NOT_SIGNED_IN = "not_signed_in"
    RESET_NOT_ALLOWED = "reset_not_allowed"
    CSRF_FAILED = "csrf_failed"
    CROSS_SITE = "cross_site_request"
    RATE_LIMITED = "rate_limited"
    SERVICE_UNAVAILABLE = "service_unavailable"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    WEBHOOK_REFUSED = "webhook_refused"
    ADMIN_TOKEN_INVALID = "admin_token_invalid"
    USER_NOT_FOUND = "user_not_found"
    CONTACT_TAKEN = "contact_taken"
    UNSUPPORTED_PASSWORD_HASH = "unsupported_password_hash"


class ResetflowError(Exception):
    """Base of every error resetflow shows to a client.

    ``message`` is a sentence safe to show to the person at the keyboard: it never says
    whether an account exists.
    """

    code: ErrorCode = ErrorCode.MALFORMED_REQUEST
    message: str = "The request could not be understood."

    def __init__(self, message: str | None = None, *, fields: dict[str, str] | None = None):
        super().__init__(message or self.message)
        self.message = message or self.message
        self.fields = fields or {}


class InvalidInput(ResetflowError):
    code = ErrorCode.INVALID_INPUT
    message = "Some fields need your attention."


class PasswordRejected(InvalidInput):
    code = ErrorCode.WEAK_PASSWORD
    message = "Please choose a different password."


class MalformedRequest(ResetflowError):
    code = ErrorCode.MALFORMED_REQUEST


class UnsupportedMediaType(ResetflowError):
    code = ErrorCode.UNSUPPORTED_MEDIA_TYPE
    message = "Send application/json or an HTML form."


class PayloadTooLarge(ResetflowError):
    code = ErrorCode.PAYLOAD_TOO_LARGE
    message = "The request body is too large."


class InvalidCode(ResetflowError):
    code = ErrorCode.INVALID_CODE
    message = "That code is not valid. Check it, or ask for a new one."


class InvalidCredentials(ResetflowError):
    code = ErrorCode.INVALID_CREDENTIALS
    message = "The email, phone number or password is not right."


class NotSignedIn(ResetflowError):
    code = ErrorCode.NOT_SIGNED_IN
    message = "Please sign in first."


class ResetNotAllowed(ResetflowError):
    code = ErrorCode.RESET_NOT_ALLOWED
    message = "Enter the code we sent you before choosing a new password."


class Forbidden(ResetflowError):
    code = ErrorCode.CSRF_FAILED
    message = "This form has expired. Reload the page and try again."


class CrossSiteRequest(Forbidden):
    code = ErrorCode.CROSS_SITE
    message = "Cross-site requests are not allowed."


class WebhookRefused(ResetflowError):
    """A provider webhook whose signature, credentials or secret header is wrong."""

    code = ErrorCode.WEBHOOK_REFUSED
    message = "The webhook could not be authenticated."


class RateLimited(ResetflowError):
    """Over a per-client or global limit; says nothing about any account (R18)."""

    code = ErrorCode.RATE_LIMITED
    message = "Too many requests. Please wait a moment and try again."

    def __init__(self, message: str | None = None, *, retry_after: int = 60) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ServiceUnavailable(ResetflowError):
    code = ErrorCode.SERVICE_UNAVAILABLE
    message = "The service is busy. Please try again shortly."


class AdminTokenInvalid(ResetflowError):
    """The operator API without ``Authorization: Bearer`` and a live token (R60)."""

    code = ErrorCode.ADMIN_TOKEN_INVALID
    message = "A valid admin API token is required."


class NotFound(ResetflowError):
    """A path or a method that does not exist (what the router says: 404 or 405)."""

    code = ErrorCode.NOT_FOUND
    message = "Not found."


class MethodNotAllowed(ResetflowError):
    code = ErrorCode.METHOD_NOT_ALLOWED
    message = "Method not allowed."


class MetricsTokenRequired(ResetflowError):
    """``/metrics`` (and ``/readyz``'s figures) without the right bearer token."""

    code = ErrorCode.NOT_SIGNED_IN
    message = "A valid bearer token is required to read the metrics."


class UserNotFound(ResetflowError):
    """Operator API only: operators may learn whether an account exists."""

    code = ErrorCode.USER_NOT_FOUND
    message = "There is no account with that id."


class ContactTaken(ResetflowError):
    """Operator API only: the email or phone already belongs to an account."""

    code = ErrorCode.CONTACT_TAKEN
    message = "That email address or phone number already has an account."

    def __init__(self, *, user_id: str | None = None, fields: dict[str, str] | None = None):
        super().__init__(fields=fields)
        self.user_id = user_id


class UnsupportedPasswordHash(InvalidInput):
    code = ErrorCode.UNSUPPORTED_PASSWORD_HASH
    message = "The password hash is in a format resetflow cannot verify."
