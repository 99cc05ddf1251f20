"""What the HTTP edge accepts and what it always sends back (R29, R30, R32, R41, R46, R50)."""

from __future__ import annotations

import re
from collections.abc import Callable

import httpx
import pytest

from tests.conftest import LiveApp
from tests.support.flow import PASSWORD, find_code, sign_up, sign_up_verified, wait_for_dev_message
from tests.support.prod import prod_settings

PAGES = [
    "/",
    "/new-user",
    "/login",
    "/forgot-password",
    "/enter-token",
    "/new-password",
    "/account",
]


def _csrf(page: httpx.Response) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert match, "page has no CSRF field"
    return match.group(1)


def test_r29_no_store_on_every_page_and_answer(live_app: Callable[..., LiveApp]) -> None:
    app = live_app()
    with app.client() as client:
        answers = [client.get(path, follow_redirects=False) for path in PAGES]
        answers.append(client.post("/send-token", json={"email": "x@example.com"}))
        answers.append(client.post("/verify-token", json={"token": "123456"}))
        answers.append(client.post("/login", json={"email": "x@example.com", "password": "p"}))
        answers.append(
            client.post("/send-token", content=b"{", headers={"content-type": "application/json"})
        )
        answers.append(client.get("/no-such-page"))
    for answer in answers:
        assert answer.headers["cache-control"] == "no-store", answer.request.url


def test_r30_form_posts_need_the_session_csrf_token(live_app: Callable[..., LiveApp]) -> None:
    app = live_app()
    with app.client() as owner:
        sign_up_verified(owner)
    with app.client() as client:
        token = _csrf(client.get("/login"))
        form = {"email": "ada@example.com", "password": PASSWORD}
        missing = client.post("/login", data=form)
        assert missing.status_code == 403
        wrong = client.post("/login", data={**form, "csrf_token": "x" * 43})
        assert wrong.status_code == 403
        with app.client() as other:
            # A token from another session is no good either.
            foreign = _csrf(other.get("/login"))
        assert client.post("/login", data={**form, "csrf_token": foreign}).status_code == 403
        ok = client.post("/login", data={**form, "csrf_token": token}, follow_redirects=False)
        assert ok.status_code == 303
        assert ok.headers["location"] == "/account"


def test_r30_forms_re_render_with_the_error_when_the_input_is_wrong(
    live_app: Callable[..., LiveApp],
) -> None:
    app = live_app()
    with app.client() as client:
        token = _csrf(client.get("/new-user"))
        page = client.post(
            "/create-user",
            data={
                "csrf_token": token,
                "name": "Ada",
                "email": "not-an-email",
                "phone": "+14155550100",
                "password": "short",
                "preference": "email",
            },
        )
        assert page.status_code == 422
        assert "text/html" in page.headers["content-type"]
        assert "Enter a valid email address." in page.text
        assert 'value="not-an-email"' in page.text  # what was typed is kept...
        assert 'value="short"' not in page.text  # ...but never the password


def test_r31_cross_site_posts_are_refused(live_app: Callable[..., LiveApp]) -> None:
    app = live_app()
    with app.client() as client:
        body = {"email": "ada@example.com"}
        assert (
            client.post(
                "/send-token", json=body, headers={"Sec-Fetch-Site": "cross-site"}
            ).status_code
            == 403
        )
        evil = client.post("/send-token", json=body, headers={"Origin": "https://evil.example"})
        assert evil.status_code == 403
        assert evil.json()["code"] == "cross_site_request"
        assert client.post("/send-token", json=body, headers={"Origin": app.url}).status_code == 202
        assert (
            client.post(
                "/send-token", json=body, headers={"Sec-Fetch-Site": "same-origin"}
            ).status_code
            == 202
        )


@pytest.mark.parametrize(
    "content_type", ["text/plain", "multipart/form-data; boundary=x", "application/xml", ""]
)
def test_r32_simple_content_types_are_refused_with_415(
    live_app: Callable[..., LiveApp], content_type: str
) -> None:
    app = live_app()
    with app.client() as client:
        answer = client.post(
            "/send-token",
            content=b'{"email": "ada@example.com"}',
            headers={"content-type": content_type},
        )
    assert answer.status_code == 415
    assert answer.json()["code"] == "unsupported_media_type"


def test_r32_no_state_change_on_get(live_app: Callable[..., LiveApp]) -> None:
    app = live_app()
    with app.client() as client:
        for path in ("/send-token", "/verify-token", "/reset-password", "/logout", "/create-user"):
            assert client.get(path).status_code == 405
        for page in PAGES:
            client.get(page)
        assert client.get("/readyz").json()["outbox_pending"] == 0


def test_r41_codes_only_in_bodies_and_no_referrer(live_app: Callable[..., LiveApp]) -> None:
    app = live_app()
    with app.client() as client:
        sign_up_verified(client)
        token_page = client.get("/forgot-password")
        assert token_page.headers["referrer-policy"] == "no-referrer"
        client.post(
            "/send-token", data={"csrf_token": _csrf(token_page), "email": "ada@example.com"}
        )
        code = find_code(
            wait_for_dev_message(client, to="ada@example.com", notification="password-reset-token")[
                "text"
            ]
        )
        enter = client.get("/enter-token")
        assert 'method="post"' in enter.text
        assert 'action="/verify-token"' in enter.text
        answer = client.post(
            "/verify-token",
            data={"csrf_token": _csrf(enter), "token": code},
            follow_redirects=False,
        )
        assert answer.status_code == 303
        assert code not in answer.headers["location"]
        assert code not in str(answer.request.url)


def test_r46_unknown_fields_wrong_types_and_lengths_are_refused(
    live_app: Callable[..., LiveApp],
) -> None:
    app = live_app()
    with app.client() as client:
        extra = client.post("/send-token", json={"email": "a@example.com", "admin": True})
        assert extra.status_code == 422 and extra.json()["fields"] == {
            "admin": "This field is not allowed."
        }
        number = client.post("/verify-token", json={"token": 123456})
        assert number.status_code == 422 and "token" in number.json()["fields"]
        for bad in ("12345", "1234567", "12 456", "abcdef"):
            assert client.post("/verify-token", json={"token": bad}).status_code == 422
        long_email = client.post("/send-token", json={"email": "a" * 250 + "@example.com"})
        assert long_email.status_code == 422
        long_name = client.post(
            "/create-user",
            json={
                "name": "n" * 201,
                "email": "a@example.com",
                "phone": "+14155550100",
                "password": "p" * 20,
                "preference": "email",
            },
        )
        assert long_name.status_code == 422 and "name" in long_name.json()["fields"]
        both = client.post("/send-token", json={"email": "a@example.com", "phone": "+14155550100"})
        assert both.status_code == 422
        not_object = client.post("/send-token", json=["a@example.com"])
        assert not_object.status_code == 400 and not_object.json()["code"] == "malformed_request"
        broken = client.post(
            "/send-token", content=b"{nope", headers={"content-type": "application/json"}
        )
        assert broken.status_code == 400
        huge = client.post("/send-token", json={"email": "a@example.com", "pad": "x" * 17000})
        assert huge.status_code == 413 and huge.json()["code"] == "payload_too_large"


def test_r46_chunked_bodies_over_the_limit_are_refused(live_app: Callable[..., LiveApp]) -> None:
    app = live_app()

    def chunks():  # no Content-Length: the limit must hold while reading
        for _ in range(20):
            yield b"x" * 1024

    with app.client() as client:
        answer = client.post(
            "/send-token", content=chunks(), headers={"content-type": "application/json"}
        )
    assert answer.status_code == 413


def test_r50_security_headers_on_pages_and_answers(live_app: Callable[..., LiveApp]) -> None:
    app = live_app()
    with app.client() as client:
        for answer in (
            client.get("/"),
            client.post("/send-token", json={"email": "a@example.com"}),
        ):
            csp = answer.headers["content-security-policy"]
            assert "frame-ancestors 'none'" in csp
            assert "script-src" not in csp or "'unsafe-inline'" not in csp
            assert answer.headers["x-content-type-options"] == "nosniff"
            assert answer.headers["referrer-policy"] == "no-referrer"
            assert "access-control-allow-origin" not in answer.headers
        page = client.get("/")
        assert "<script" not in page.text


def test_errors_are_json_with_stable_codes_never_500(live_app: Callable[..., LiveApp]) -> None:
    app = live_app()
    with app.client() as client:
        for path, body in [
            ("/create-user", {"name": "Ada"}),
            ("/verify-contact", {"token": "123456"}),
            ("/reset-password", {"newPassword": "x", "newPasswordConfirm": "y"}),
            ("/login", {"email": "a@example.com"}),
        ]:
            answer = client.post(path, json=body)
            assert 400 <= answer.status_code < 500, (path, answer.status_code)
            assert set(answer.json()) >= {"error", "code"}


def test_r49_prod_sends_hsts_and_redirects_plain_http(live_app: Callable[..., LiveApp]) -> None:
    app = live_app(**prod_settings(trusted_proxies="127.0.0.1/32"))
    with app.client() as client:
        plain = client.get("/login?next=x", follow_redirects=False)
        assert plain.status_code == 308
        assert plain.headers["location"] == "https://auth.example.org/login?next=x"
        secure = client.get("/login", headers={"X-Forwarded-Proto": "https"})
        assert secure.status_code == 200
        max_age = int(
            re.search(r"max-age=(\d+)", secure.headers["strict-transport-security"]).group(1)
        )
        assert max_age >= 365 * 24 * 3600
        assert client.get("/dev/outbox", headers={"X-Forwarded-Proto": "https"}).status_code == 404


def test_r49_forwarded_proto_is_ignored_from_untrusted_peers(
    live_app: Callable[..., LiveApp],
) -> None:
    app = live_app(**prod_settings())
    with app.client() as client:
        spoofed = client.get(
            "/login", headers={"X-Forwarded-Proto": "https"}, follow_redirects=False
        )
    assert spoofed.status_code == 308


def test_r51_no_cors_grants(live_app: Callable[..., LiveApp]) -> None:
    app = live_app()
    with app.client() as client:
        preflight = client.options(
            "/send-token",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
        )
        assert "access-control-allow-origin" not in preflight.headers
        assert "access-control-allow-credentials" not in preflight.headers
        post = client.post(
            "/send-token", json={"email": "a@example.com"}, headers={"Origin": app.url}
        )
        assert "access-control-allow-origin" not in post.headers


def test_r31_own_forms_with_origin_null_are_accepted_but_not_cross_site_ones(
    live_app: Callable[..., LiveApp],
) -> None:
    """Browsers send ``Origin: null`` under ``Referrer-Policy: no-referrer``; only a
    same-origin fetch may do so."""
    app = live_app()
    with app.client() as client:
        body = {"email": "ada@example.com"}
        own = client.post(
            "/send-token", json=body, headers={"Origin": "null", "Sec-Fetch-Site": "same-origin"}
        )
        assert own.status_code == 202
        for site in ("cross-site", "same-site", "none", ""):
            refused = client.post(
                "/send-token", json=body, headers={"Origin": "null", "Sec-Fetch-Site": site}
            )
            assert refused.status_code == 403, site


def test_every_answer_has_a_request_id_that_the_logs_carry(
    live_app: Callable[..., LiveApp],
) -> None:
    import io
    import logging

    from resetflow.logs import JsonFormatter

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)  # formats at once, as in production
    handler.setFormatter(JsonFormatter())
    audit_log = logging.getLogger("resetflow.audit")
    audit_log.addHandler(handler)
    previous_level = audit_log.level
    audit_log.setLevel(logging.INFO)
    app = live_app()
    with app.client() as client:
        generated = client.post("/send-token", json={"email": "a@example.com"})
        assert re.fullmatch(r"[0-9a-f]{16}", generated.headers["x-request-id"])
        kept = client.get("/", headers={"X-Request-ID": "lb-0123456789"})
        assert kept.headers["x-request-id"] == "lb-0123456789"
        forged = client.get("/", headers={"X-Request-ID": 'x" {"event": "forged"}'})
        assert re.fullmatch(r"[0-9a-f]{16}", forged.headers["x-request-id"])
    audit_log.removeHandler(handler)
    audit_log.setLevel(previous_level)
    lines = stream.getvalue().splitlines()
    assert any(generated.headers["x-request-id"] in line for line in lines)


def test_readyz_fails_when_the_outbox_lags(live_app: Callable[..., LiveApp]) -> None:
    from resetflow.clock import FrozenClock

    clock = FrozenClock()
    app = live_app(clock=clock, inprocess_worker=False, ready_max_outbox_lag_seconds=120)
    with app.client() as client:
        sign_up(client, name="Ada")
        assert client.get("/readyz").status_code == 200
        clock.advance(121)
        lagging = client.get("/readyz")
    assert lagging.status_code == 503
    assert lagging.json()["outbox"] == "lagging"
    assert lagging.json()["outbox_lag_seconds"] >= 121


def test_json_log_lines_leave_out_uvicorns_ansi_colour_copy() -> None:
    """Uvicorn logs its events with a ``color_message`` copy full of ANSI escapes; a JSON
    line carries the plain event only."""
    import json
    import logging

    from resetflow.logs import JsonFormatter

    record = logging.LogRecord(
        "uvicorn.error", logging.INFO, __file__, 1, "Finished server process [%d]", (7,), None
    )
    record.color_message = "Finished server process [\x1b[36m%d\x1b[0m]"
    line = json.loads(JsonFormatter().format(record))
    assert line["event"] == "Finished server process [7]"
    assert "color_message" not in line and "\x1b" not in json.dumps(line)
