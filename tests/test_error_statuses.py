"""Domain errors carry a stable code; their HTTP status is chosen once, at the edge
(web/error_json.py). Every error resetflow can raise must be mapped there."""

from __future__ import annotations

import inspect

from resetflow import errors
from resetflow.web.error_json import HTTP_STATUS, http_status


def _domain_errors() -> list[type[errors.ResetflowError]]:
    return [
        kind
        for _, kind in inspect.getmembers(errors, inspect.isclass)
        if issubclass(kind, errors.ResetflowError) and kind is not errors.ResetflowError
    ]


def test_every_domain_error_is_mapped_at_the_edge() -> None:
    unmapped = [
        kind.__name__
        for kind in _domain_errors()
        if not any(ancestor in HTTP_STATUS for ancestor in kind.__mro__)
    ]
    assert unmapped == []


def test_statuses_are_the_ones_spec_section_4_names() -> None:
    assert {
        kind.__name__: http_status(kind())
        for kind in (
            errors.MalformedRequest,
            errors.InvalidCode,
            errors.InvalidCredentials,
            errors.NotSignedIn,
            errors.CrossSiteRequest,
            errors.UserNotFound,
            errors.ContactTaken,
            errors.PayloadTooLarge,
            errors.UnsupportedMediaType,
            errors.PasswordRejected,
            errors.UnsupportedPasswordHash,
            errors.ServiceUnavailable,
        )
    } == {
        "MalformedRequest": 400,
        "InvalidCode": 400,
        "InvalidCredentials": 401,
        "NotSignedIn": 401,
        "CrossSiteRequest": 403,
        "UserNotFound": 404,
        "ContactTaken": 409,
        "PayloadTooLarge": 413,
        "UnsupportedMediaType": 415,
        "PasswordRejected": 422,
        "UnsupportedPasswordHash": 422,
        "ServiceUnavailable": 503,
    }
    assert http_status(errors.RateLimited(retry_after=1)) == 429
