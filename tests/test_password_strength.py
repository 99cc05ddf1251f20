"""R56: a strength estimate (zxcvbn, with the user's own data as inputs) refuses weak
long passwords that the common-password list cannot see, at sign-up and at reset."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from resetflow.accounts.passwords import PasswordPolicy
from resetflow.accounts.strength import StrengthEstimator, personal_inputs
from resetflow.config import ConfigError, load_settings
from resetflow.errors import PasswordRejected
from tests.conftest import LiveApp
from tests.support.flow import create_verified_account, find_code, wait_for_dev_message

PERSONAL = ("Ada Lovelace", "ada.lovelace@example.com", "+14155550100")
STRONG = "amber kettle drifts over 9 quiet dunes"
WEAK = [
    "password12345678",  # dictionary word + digits (not in the list as it is)
    "qwertyuiopasdfgh",  # keyboard walk
    "aaaaaaaaaaaaaaaa",  # repeat
    "abcdefghijklmnop",  # sequence
    "1234567890123456",  # digits in sequence
    "sunshine20242024",  # word + a year, twice
    "dragonfly2024123",  # word + digits
]
OWN = ["adalovelace12345", "Ada Lovelace 2024!", "lovelace14155550100", "ada.lovelace1984x"]


@pytest.mark.anyio
@pytest.mark.parametrize("password", WEAK + OWN)
async def test_r56_weak_long_passwords_are_refused_with_zxcvbns_hint(password: str) -> None:
    assert len(password) >= 15  # the length rule lets every one of these through
    with pytest.raises(PasswordRejected) as caught:
        await PasswordPolicy().check(password, personal=PERSONAL)
    reason = caught.value.fields["password"]
    assert reason == caught.value.message
    assert "Use at least" not in reason  # not the length rule's reason
    assert StrengthEstimator().weakness(password, PERSONAL) == reason


@pytest.mark.anyio
async def test_r56_the_hint_is_zxcvbns_own_feedback() -> None:
    from zxcvbn import zxcvbn

    feedback = zxcvbn("aaaaaaaaaaaaaaaa")["feedback"]
    with pytest.raises(PasswordRejected) as caught:
        await PasswordPolicy().check("aaaaaaaaaaaaaaaa")
    assert feedback["warning"] and feedback["warning"] in caught.value.fields["password"]
    for suggestion in feedback["suggestions"]:
        assert suggestion in caught.value.fields["password"]


@pytest.mark.anyio
async def test_r56_passphrases_pass_and_the_own_data_only_counts_for_its_owner() -> None:
    await PasswordPolicy().check(STRONG, personal=PERSONAL)
    await PasswordPolicy().check("correct horse battery staple", personal=PERSONAL)
    # Without Ada's data as input, her name with digits is just an uncommon word.
    assert StrengthEstimator().weakness("lovelace14155550100", ()) is None
    assert StrengthEstimator().weakness("lovelace14155550100", PERSONAL) is not None


def test_r56_personal_inputs_include_the_parts_of_name_email_and_phone() -> None:
    inputs = personal_inputs(PERSONAL)
    assert {"ada", "lovelace", "ada.lovelace", "ada lovelace", "example"} <= set(inputs)
    assert {"14155550100", "4155550100", "0100"} <= set(inputs)


def test_r56_minimum_guesses_is_configurable_upwards_only(tmp_path: Path) -> None:
    settings = load_settings(_env_file=None, data_dir=tmp_path)
    assert settings.password_min_guesses == 1e10
    stricter = load_settings(_env_file=None, data_dir=tmp_path, password_min_guesses=1e14)
    assert stricter.password_min_guesses == 1e14
    with pytest.raises(ConfigError, match=r"^RESETFLOW_PASSWORD_MIN_GUESSES"):
        load_settings(_env_file=None, data_dir=tmp_path, password_min_guesses=1e9)
    with pytest.raises(ValueError):
        StrengthEstimator(min_guesses=1e9)
    assert StrengthEstimator(min_guesses=1e40).weakness(STRONG) is not None


@pytest.mark.anyio
async def test_r56_the_estimate_runs_off_the_event_loop_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    threads: list[threading.Thread] = []
    real = StrengthEstimator.weakness

    def spy(self: StrengthEstimator, *args: Any) -> str | None:
        threads.append(threading.current_thread())
        return real(self, *args)

    monkeypatch.setattr(StrengthEstimator, "weakness", spy)
    await PasswordPolicy().check(STRONG, personal=PERSONAL)
    assert threads and threading.current_thread() not in threads


def test_r56_a_long_password_is_estimated_by_its_first_64_characters() -> None:
    """The cost bound: 256 characters are accepted (R34) and estimated in bounded time;
    a strong start is enough, a weak start with strength only beyond 64 is not."""
    estimator = StrengthEstimator()
    assert estimator.weakness((STRONG + " ") * 7) is None
    assert estimator.weakness("a" * 64 + STRONG) is not None


def test_r56_sign_up_refuses_weak_long_passwords_through_the_service(
    live_app: Callable[..., LiveApp],
) -> None:
    app = live_app()
    with app.client() as client:
        for password in ["password12345678", "qwertyuiopasdfgh", "adalovelace12345"]:
            answer = client.post(
                "/create-user",
                json={
                    "name": "Ada Lovelace",
                    "email": "ada@example.com",
                    "phone": "+14155550100",
                    "password": password,
                    "preference": "email",
                },
            )
            assert answer.status_code == 422, password
            body = answer.json()
            assert body["code"] == "weak_password"
            assert body["fields"]["password"] == StrengthEstimator().weakness(
                password, ("Ada Lovelace", "ada@example.com", "+14155550100")
            )
        accepted = client.post(
            "/create-user",
            json={
                "name": "Ada Lovelace",
                "email": "ada@example.com",
                "phone": "+14155550100",
                "password": STRONG,
                "preference": "email",
            },
        )
        assert accepted.status_code == 201


def test_r56_reset_refuses_weak_long_passwords_through_the_service(
    live_app: Callable[..., LiveApp],
) -> None:
    app = live_app()
    create_verified_account(app.settings, name="Ada Lovelace")
    with app.client() as client:
        assert client.post("/send-token", json={"email": "ada@example.com"}).status_code == 202
        message = wait_for_dev_message(
            client, to="ada@example.com", notification="password-reset-token"
        )
        token = find_code(message["text"])
        assert client.post("/verify-token", json={"token": token}).status_code == 200
        for weak in ["password12345678", "abcdefghijklmnop", "lovelace2024lovelace"]:
            answer = client.post(
                "/reset-password", json={"newPassword": weak, "newPasswordConfirm": weak}
            )
            assert answer.status_code == 422, weak
            assert answer.json()["code"] == "weak_password"
        done = client.post(
            "/reset-password", json={"newPassword": STRONG, "newPasswordConfirm": STRONG}
        )
        assert done.status_code == 200
        assert (
            client.post("/login", json={"email": "ada@example.com", "password": STRONG}).status_code
            == 200
        )
