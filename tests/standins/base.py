"""What every stand-in shares: a Starlette app on loopback, the requests it got, and the
failure switches tests flip.

A stand-in subclasses :class:`StandIn` and keeps only what is its provider's own: its
routes (:meth:`StandIn.routes`), how a request is checked and answered, its error body (a
:class:`ProviderError`), the statuses its outages answer (:attr:`StandIn.OUTAGES`) and
what an unknown path gets (:meth:`StandIn.unknown_path`). The base owns the rest:

- every request is recorded (:meth:`StandIn.record`) as a :class:`RecordedRequest`, and
  recording wakes :meth:`StandIn.wait_for`, which waits for the messages a provider
  accepted for one address (:meth:`StandIn.address_of`);
- :meth:`StandIn.outage` and :meth:`StandIn.slow` set a :class:`Switch` for all requests or
  the next few; an endpoint asks :meth:`StandIn.take_outage` / :meth:`StandIn.take_slow`
  where its provider would fail or be slow, and answers in the provider's words;
  :meth:`StandIn.recover` ends both (and whatever :meth:`StandIn.recover_more` adds);
- :func:`running` serves a stand-in under uvicorn on a free loopback port and sets its
  :attr:`StandIn.url`.

All state sits behind one :class:`threading.Condition`: tests read it from their own
thread while uvicorn's thread changes it.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.support.servers import serve_in_thread

METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]

MessageT = TypeVar("MessageT")
StandInT = TypeVar("StandInT", bound="StandIn[Any]")


class ProviderError(Exception):
    """A refusal in a provider's words: a subclass gives ``status`` and :meth:`body`."""

    status: int

    def body(self) -> dict[str, Any]:
        """The provider's JSON error body."""
        raise NotImplementedError

    def headers(self) -> dict[str, str]:
        """Headers the provider sends with this refusal."""
        return {}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers())


@dataclass(frozen=True)
class RecordedRequest:
    """One request as it arrived, and the answer it got."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    status: int
    answer: dict[str, Any]
    # The urlencoded fields, for a stand-in that reads forms (Twilio); None otherwise.
    form: list[tuple[str, str]] | None = None
    # Held past the client's timeout (Twilio's chaos and hang modes): answered late.
    timed_out: bool = False

    @property
    def json(self) -> Any:
        """The body as JSON, or ``None`` when it is not JSON."""
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    @property
    def fields(self) -> dict[str, str]:
        """The form fields, last one winning (``{}`` for a body that was not a form)."""
        return dict(self.form or [])


@dataclass
class Switch:
    """A failure mode for every request (``remaining`` None) or the next ``remaining``."""

    value: float
    remaining: int | None

    def take(self) -> bool:
        """Whether this request is affected; counts it down."""
        if self.remaining is None:
            return True
        if self.remaining <= 0:
            return False
        self.remaining -= 1
        return True


@dataclass(kw_only=True)
class StandIn(Generic[MessageT]):
    """A provider's API on loopback; serve :attr:`app` (see :func:`running`), set :attr:`url`.

    A subclass must give :meth:`routes`, :meth:`unknown_path`, :meth:`address_of` and
    :attr:`OUTAGES`; it appends what it accepted to ``_messages`` under ``_changed``.
    """

    # Statuses outage() may answer; the provider's error for each is the subclass's.
    OUTAGES: ClassVar[frozenset[int]]
    # Record the path as sent (percent-escapes and all) rather than as the router decoded it.
    RECORD_RAW_PATH: ClassVar[bool] = False
    # How wait_for's failure names what it waited for, e.g. "email(s)".
    NOUN: ClassVar[str] = "message(s)"

    url: str = ""
    _messages: list[MessageT] = field(default_factory=list, init=False, repr=False)
    _requests: list[RecordedRequest] = field(default_factory=list, init=False, repr=False)
    _outage: Switch | None = field(default=None, init=False, repr=False)
    _slow: Switch | None = field(default=None, init=False, repr=False)
    _changed: threading.Condition = field(
        default_factory=threading.Condition, init=False, repr=False
    )

    def __post_init__(self) -> None:
        self.app = Starlette(
            routes=[*self.routes(), Route("/{path:path}", self._not_found, methods=METHODS)]
        )

    # What a subclass gives ---------------------------------------------------------------

    def routes(self) -> list[Route]:
        """The provider's endpoints; every other path is :meth:`unknown_path`'s."""
        raise NotImplementedError

    def unknown_path(self, request: Request) -> tuple[int, dict[str, Any], Response]:
        """The status, recorded answer and response for a path the provider does not have."""
        raise NotImplementedError

    def address_of(self, message: MessageT) -> str | None:
        """Where an accepted message went, as :meth:`wait_for` matches it."""
        raise NotImplementedError

    def summary(self, request: RecordedRequest) -> tuple[Any, ...]:
        """What :meth:`wait_for`'s failure shows of each request so far."""
        return (request.status,)

    def form_of(self, request: Request, raw: bytes) -> list[tuple[str, str]] | None:
        """The form fields an unknown path's request is recorded with (Twilio reads forms)."""
        return None

    def recover_more(self) -> None:
        """Called by :meth:`recover`, under the lock: end the provider's own failure modes."""

    # What the tests look at --------------------------------------------------------------

    @property
    def messages(self) -> list[MessageT]:
        with self._changed:
            return list(self._messages)

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._changed:
            return list(self._requests)

    def wait_for(self, to: str, count: int = 1, timeout: float = 15) -> list[MessageT]:
        """The messages accepted for ``to``, once there are at least ``count`` of them."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = [m for m in self._messages if self.address_of(m) == to]
                if len(found) >= count:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    answers = [self.summary(r) for r in self._requests]
                    raise AssertionError(
                        f"expected {count} {self.NOUN} to {to}, got {len(found)}; "
                        f"answers so far: {answers}"
                    )
                self._changed.wait(left)

    # Failure switches --------------------------------------------------------------------

    def outage(self, status: int = 503, *, requests: int | None = None) -> None:
        """Answer ``status`` (one of :attr:`OUTAGES`) to the next ``requests`` requests
        (all: None)."""
        if status not in self.OUTAGES:
            raise ValueError(f"outage status must be one of {sorted(self.OUTAGES)}")
        with self._changed:
            self._outage = Switch(status, requests)

    def slow(self, seconds: float, *, requests: int | None = None) -> None:
        """Hold back the answer to the next ``requests`` requests (all: None) by ``seconds``;
        the requests themselves are handled at once, as a real API does once it has them,
        so a client that times out and retries may send twice."""
        with self._changed:
            self._slow = Switch(seconds, requests)

    def recover(self) -> None:
        """End an outage, slowness and the provider's own failure modes."""
        with self._changed:
            self._outage = None
            self._slow = None
            self.recover_more()

    def take_outage(self) -> int | None:
        """The status this request is to be failed with by an outage, if any (counts down)."""
        with self._changed:
            outage = self._outage
            if outage is None or not outage.take():
                return None
        return int(outage.value)

    def take_slow(self) -> float:
        """How long to hold back this request's answer (0: not at all; counts down)."""
        with self._changed:
            slow = self._slow
            return slow.value if slow is not None and slow.take() else 0.0

    # Recording ---------------------------------------------------------------------------

    def record(
        self,
        request: Request,
        raw: bytes,
        status: int,
        answer: dict[str, Any],
        *,
        form: list[tuple[str, str]] | None = None,
        timed_out: bool = False,
    ) -> None:
        """Keep ``request`` and its answer, and wake :meth:`wait_for`."""
        raw_path = request.scope.get("raw_path") if self.RECORD_RAW_PATH else None
        recorded = RecordedRequest(
            method=request.method,
            path=raw_path.decode("ascii") if raw_path else request.url.path,
            headers={name.lower(): value for name, value in request.headers.items()},
            body=raw,
            status=status,
            answer=answer,
            form=form,
            timed_out=timed_out,
        )
        with self._changed:
            self._requests.append(recorded)
            self._changed.notify_all()

    async def answer(
        self,
        request: Request,
        raw: bytes,
        status: int,
        answer: dict[str, Any],
        *,
        delay: float = 0.0,
    ) -> Response:
        """Record the request, then answer it with ``answer`` as JSON, ``delay`` seconds
        late (the request was handled at once: only the answer is held back)."""
        self.record(request, raw, status, answer)
        if delay:
            await asyncio.sleep(delay)
        return JSONResponse(answer, status_code=status)

    async def _not_found(self, request: Request) -> Response:
        raw = await request.body()
        status, answer, response = self.unknown_path(request)
        self.record(request, raw, status, answer, form=self.form_of(request, raw))
        return response


@contextmanager
def running(standin: StandInT) -> Iterator[StandInT]:
    """``standin`` served by uvicorn on a free loopback port, its :attr:`~StandIn.url` set."""
    with serve_in_thread(standin.app) as url:
        standin.url = url
        yield standin
