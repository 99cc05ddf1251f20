"""The return_to allow-list (web/return_to.py): what it follows and what it refuses (R59)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from resetflow.config import ConfigError, Settings
from resetflow.web.return_to import MAX_LENGTH, AllowList, Refused, loggable

ALLOWED = AllowList.from_setting(
    "https://app.example.org/, https://shop.example.org/store, http://localhost:3000"
)

FOLLOWED = [
    "https://app.example.org",
    "https://app.example.org/",
    "https://app.example.org/dashboard?tab=2#top",
    "HTTPS://APP.EXAMPLE.ORG/Dashboard",
    "https://app.example.org:443/x",
    "https://shop.example.org/store",
    "https://shop.example.org/store/",
    "https://shop.example.org/store/item/42?color=red%20blue",
    "https://shop.example.org/store?from=mail",
    "http://localhost:3000/after-login",
    "https://app.example.org/search?q=a%2Fb",
]

REFUSED = [
    # Protocol-relative and scheme-relative tricks.
    ("//evil.example", "scheme"),
    ("//app.example.org/", "scheme"),
    ("/\\evil.example", "backslash"),
    ("https:evil.example", "scheme"),
    ("https:/evil.example", "scheme"),
    ("https:\\\\evil.example", "backslash"),
    ("https://\\evil.example", "backslash"),
    ("https://app.example.org\\@evil.example", "backslash"),
    ("https:///evil.example", "host"),
    # Userinfo and look-alike hosts.
    ("https://app.example.org@evil.example", "userinfo"),
    ("https://app.example.org:443@evil.example/", "userinfo"),
    ("https://user:pass@app.example.org/", "userinfo"),
    ("https://app.example.org.evil.example", "not_allowed"),
    ("https://evil.example/app.example.org/", "not_allowed"),
    ("https://evil.example/?https://app.example.org/", "not_allowed"),
    ("https://evilapp.example.org/", "not_allowed"),
    ("https://app.example.org./", "host"),
    ("https://app.example.org_evil/", "host"),
    # Percent-encoded tricks.
    ("https://app.example.org%2F@evil", "userinfo"),
    ("https://app.example.org%2F.evil.example/", "encoded_authority"),
    ("https://%61pp.example.org/", "encoded_authority"),
    ("%2F%2Fevil.example", "scheme"),
    ("https://app.example.org/%2F%2Fevil.example", "double_slash"),
    ("https://app.example.org/%2f%2Fevil.example", "double_slash"),
    ("https://app.example.org/%5Cevil.example", "backslash"),
    ("https://app.example.org/%0d%0aSet-Cookie:%20x=1", "encoded_control"),
    ("https://app.example.org/?q=%0D%0ALocation:%20https://evil.example", "encoded_control"),
    ("https://app.example.org/%00", "encoded_control"),
    ("https://shop.example.org/store/..%2F..%2Fadmin", "dot_segment"),
    ("https://shop.example.org/store/%2e%2e/admin", "dot_segment"),
    ("https://shop.example.org/store/%252e%252e/admin", "dot_segment"),
    ("https://shop.example.org/store/../admin", "dot_segment"),
    ("https://shop.example.org/store/./x", "dot_segment"),
    ("https://app.example.org//evil.example", "double_slash"),
    # Other schemes.
    ("javascript:alert(1)", "scheme"),
    ("JavaScript://app.example.org/%0aalert(1)", "scheme"),
    ("data:text/html,<script>alert(1)</script>", "scheme"),
    ("data:text/html, x", "bad_character"),
    ("data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==", "scheme"),
    ("vbscript:msgbox(1)", "scheme"),
    ("ftp://app.example.org/", "scheme"),
    ("file:///etc/passwd", "scheme"),
    # Same host, wrong scheme or port.
    ("http://app.example.org/", "not_allowed"),
    ("https://app.example.org:8443/", "not_allowed"),
    ("https://localhost:3000/", "not_allowed"),
    ("http://localhost/", "not_allowed"),
    ("http://localhost:3001/", "not_allowed"),
    ("https://app.example.org:0/", "port"),
    ("https://app.example.org:99999/", "port"),
    ("https://app.example.org:+443/", "port"),
    ("https://app.example.org:/", "port"),
    # Outside the path prefix.
    ("https://shop.example.org/", "not_allowed"),
    ("https://shop.example.org/storefront", "not_allowed"),
    ("https://shop.example.org/STORE/x", "not_allowed"),
    ("https://shop.example.org/%73tore/x", "not_allowed"),
    # Whitespace, control and non-ASCII characters, anywhere.
    (" https://app.example.org/", "bad_character"),
    ("https://app.example.org/ ", "bad_character"),
    ("https://app.example.org/\r\nSet-Cookie: x=1", "bad_character"),
    ("https://app.example.org/\t", "bad_character"),
    ("\x00https://app.example.org/", "bad_character"),
    ("java\nscript:alert(1)", "bad_character"),
    ("https://app.exam\u0440le.org/", "bad_character"),
    ("https://app.example.org\u3002evil.example/", "bad_character"),
    ("https://app.example.org/\u2028", "bad_character"),
    # Relative, empty, not a string, too long.
    ("/dashboard", "scheme"),
    ("dashboard", "scheme"),
    ("", "empty"),
    ("https://app.example.org/" + "a" * MAX_LENGTH, "too_long"),
]


@pytest.mark.parametrize("url", FOLLOWED)
def test_r59_allowed_prefixes_are_followed(url: str) -> None:
    assert ALLOWED.check(url) == url


@pytest.mark.parametrize(("url", "reason"), REFUSED)
def test_r59_open_redirect_tricks_are_refused(url: str, reason: str) -> None:
    with pytest.raises(Refused) as refused:
        ALLOWED.check(url)
    assert refused.value.reason == reason


@pytest.mark.parametrize("value", [None, 42, ["https://app.example.org/"], b"https://x"])
def test_r59_only_strings_are_followed(value: object) -> None:
    with pytest.raises(Refused):
        ALLOWED.check(value)


def test_r59_the_length_bound_is_inclusive() -> None:
    url = "https://app.example.org/"
    longest = url + "a" * (MAX_LENGTH - len(url))
    assert ALLOWED.check(longest) == longest
    with pytest.raises(Refused):
        ALLOWED.check(longest + "a")


def test_r59_an_empty_allow_list_follows_nothing() -> None:
    nothing = AllowList.from_setting("")
    assert not nothing
    with pytest.raises(Refused) as refused:
        nothing.check("https://app.example.org/")
    assert refused.value.reason == "not_allowed"


def test_r59_a_root_prefix_allows_the_whole_origin_and_only_it() -> None:
    origin = AllowList.from_setting("https://app.example.org")
    assert origin.check("https://app.example.org/any/where?x=1")
    with pytest.raises(Refused):
        origin.check("https://app.example.org.evil.example/")


def test_r59_ipv6_hosts_compare_exactly() -> None:
    allowed = AllowList.from_setting("http://[::1]:8080/")
    assert allowed.check("http://[::1]:8080/x")
    for url in ("http://[::1]/x", "http://[::2]:8080/x", "http://[::1]x:8080/", "http://[zz]/"):
        with pytest.raises(Refused):
            allowed.check(url)


@pytest.mark.parametrize(
    "entry",
    [
        "app.example.org",
        "//app.example.org",
        "javascript:alert(1)",
        "https://user@app.example.org",
        "https://app.example.org/?next=1",
        "https://app.example.org/#x",
        "https://app.example.org/a/../b",
    ],
)
def test_r59_bad_prefixes_fail_at_start_up_naming_the_variable(
    entry: str, make_settings: Callable[..., Settings]
) -> None:
    with pytest.raises(ConfigError) as error:
        make_settings(return_to_allowed=f"https://ok.example.org,{entry}")
    assert str(error.value).startswith("RESETFLOW_RETURN_TO_ALLOWED: ")
    assert "\n" not in str(error.value)


def test_r59_refused_values_are_logged_without_query_or_raw_control_characters() -> None:
    assert loggable("https://evil.example/x?token=secret#frag") == "https://evil.example/x"
    assert loggable("https://evil\r\n.example/\u2028") == "https://evil\\r\\n.example/\\u2028"
    assert len(loggable("https://x.example/" + "a" * 5000)) == 100
    assert loggable(42) == "int"
