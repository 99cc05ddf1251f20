"""How resetflow reads the contacts people type, and where codes may go by SMS: one
object, built from the settings once (services.py) and injected into every service that
takes a contact (sign-up, sign-in, recovery's look-up, contact changes, the operator
API), so that they cannot drift apart."""

from __future__ import annotations

from resetflow.accounts.contacts import ContactError, normalise_email, normalise_phone
from resetflow.errors import InvalidInput
from resetflow.notify.sms_guard import sms_refused


class ContactRules:
    def __init__(
        self,
        *,
        default_phone_region: str | None = None,
        sms_countries: frozenset[str] = frozenset(),
    ) -> None:
        """``default_phone_region``: RESETFLOW_DEFAULT_PHONE_REGION (numbers typed without
        ``+``); ``sms_countries``: where SMS may go (notify/sms_guard.sms_refused)."""
        self.default_phone_region = default_phone_region
        self.sms_countries = sms_countries

    def email(self, raw: str, *, field: str = "email") -> str:
        """The normalised email (R47), or :class:`InvalidInput` on ``field``."""
        try:
            return normalise_email(raw)
        except ContactError as error:
            raise InvalidInput(fields={field: str(error)}) from None

    def phone(self, raw: str, *, field: str = "phone") -> str:
        """The phone in E.164 (R47), or :class:`InvalidInput` on ``field``."""
        try:
            return normalise_phone(raw, default_region=self.default_phone_region)
        except ContactError as error:
            raise InvalidInput(fields={field: str(error)}) from None

    def given(
        self, *, email: str | None = None, phone: str | None = None
    ) -> tuple[str | None, str | None]:
        """Each one given normalised (``None`` stays ``None``), or :class:`InvalidInput`
        naming every bad one."""
        fields: dict[str, str] = {}
        normal: dict[str, str | None] = {"email": None, "phone": None}
        for name, read, raw in (("email", self.email, email), ("phone", self.phone, phone)):
            if raw is None:
                continue
            try:
                normal[name] = read(raw)
            except InvalidInput as error:
                fields.update(error.fields)
        if fields:
            raise InvalidInput(fields=fields)
        return normal["email"], normal["phone"]

    def both(self, *, email: str, phone: str) -> tuple[str, str]:
        """Both normalised, or :class:`InvalidInput` naming every bad one."""
        normal_email, normal_phone = self.given(email=email, phone=phone)
        assert normal_email is not None and normal_phone is not None
        return normal_email, normal_phone

    def check_sms(self, phone: str, *, field: str, advice: str = "") -> None:
        """:class:`InvalidInput` on ``field`` when codes may not go by SMS to ``phone``
        (its region, or SMS switched off), with ``advice`` after the reason."""
        refused = sms_refused(phone, self.sms_countries)
        if refused:
            raise InvalidInput(fields={field: f"{refused} {advice}".strip()})
