"""Following the controller's Server-Sent Events from Python, across dropped connections.

`read_events` parses an SSE body (``id:``, ``event:``, ``data:`` lines, a blank line
ending each message, ``:`` comments skipped) into `EventRecord`s. `EventFollower` opens a
stream, yields its events, and when the connection drops (the network, a controller
restart, or the controller dropping a reader that fell behind) reconnects with
``Last-Event-ID``: the controller replays what was missed from its store, so nothing is
lost and nothing repeats. Reconnections are bounded (`RECONNECTS` in a row without an
event), then `UnavailableError` names the fix.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import httpx
from pydantic import ValidationError as PydanticValidationError

from stratafl import errors
from stratafl.records import EventRecord
from stratafl.restapi.wire import error_of, reaching

__all__ = ["READ_TIMEOUT_SECONDS", "RECONNECTS", "EventFollower", "read_events"]

RECONNECTS = 5
"""Reconnections in a row, without an event in between, before giving up."""
READ_TIMEOUT_SECONDS = 60.0
"""Silence after which a stream counts as dropped (the controller sends a keepalive every
15 s)."""
BACKOFF_SECONDS = 0.5


def read_events(lines: Iterator[str]) -> Iterator[EventRecord]:
    """The events of an SSE body given line by line (each ``data`` is an EventRecord)."""
    data: list[str] = []
    for line in lines:
        if line == "":
            if data:
                yield _record("\n".join(data))
            data = []
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
        # id: and event: repeat what the record holds; ":" lines are keepalives


def _record(data: str) -> EventRecord:
    try:
        return EventRecord.model_validate_json(data)
    except PydanticValidationError as exc:
        raise errors.StrataError(
            f"the controller sent an event stratafl cannot read ({exc.errors()[0]['msg']}); "
            "are the controller and this client the same stratafl version?"
        ) from exc


class EventFollower:
    """Reads one stream path of the API with ``http``, reconnecting as needed.

    ``ends(event)`` says whether an event is the last one (the stream stops after it);
    ``ended()`` is asked when the controller closes the stream before such an event (it
    may have ended before its events had a session; True stops following).
    """

    def __init__(
        self,
        http: httpx.Client,
        url: str,
        path: str,
        *,
        ends: Callable[[EventRecord], bool],
        ended: Callable[[], bool],
        reconnects: int = RECONNECTS,
        backoff: float = BACKOFF_SECONDS,
    ) -> None:
        self._http = http
        self._url = url
        self._path = path
        self._ends = ends
        self._ended = ended
        self._reconnects = reconnects
        self._backoff = backoff

    def follow(self, after: int | None = None) -> Iterator[EventRecord]:
        """The events after the id ``after`` (None: from the first), as they come."""
        last = after
        failures = 0
        while True:
            try:
                for event in self._connect(last):
                    last, failures = event.id, 0
                    yield event
                    if self._ends(event):
                        return
                if self._ended():
                    return
                failures += 1  # closed by the controller: it dropped us, or it is stopping
            except errors.UnavailableError as exc:
                failures += 1
                if failures > self._reconnects:
                    raise errors.UnavailableError(
                        f"lost the event stream {self._path} of {self._url} "
                        f"{failures} times in a row ({exc}); check that the controller runs, "
                        f"then follow again with after={last}"
                    ) from exc
            if failures > self._reconnects:
                raise errors.UnavailableError(
                    f"the controller at {self._url} closed the event stream {self._path} "
                    f"{failures} times in a row without an event; check its log, then "
                    f"follow again with after={last}"
                )
            time.sleep(self._backoff * failures)

    def _connect(self, last: int | None) -> Iterator[EventRecord]:
        headers = {} if last is None else {"Last-Event-ID": str(last)}
        timeout = httpx.Timeout(30.0, read=READ_TIMEOUT_SECONDS)
        with (
            reaching(self._url),
            self._http.stream("GET", self._path, headers=headers, timeout=timeout) as response,
        ):
            if response.is_error:
                response.read()
                raise error_of(response)  # a 503 (too many streams) is retried
            yield from read_events(response.iter_lines())
