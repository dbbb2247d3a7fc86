"""Who hears of each recorded round and each ended session: the log, the metrics, MLflow.

The session loop tells one `Watchers` and knows nothing of what listens; each watcher
does its own work quickly on the event loop (a counter, a log line, a queued message),
so none of them can slow a round down or fail a session.
"""

from __future__ import annotations

import logging
from typing import Protocol

from stratafl.records import RoundRecord
from stratafl.status import SessionStatus

__all__ = ["RoundLog", "SessionWatcher", "Watchers", "round_summary"]

log = logging.getLogger("stratafl.controller.rounds")

MEGABYTE = 1_000_000


class SessionWatcher(Protocol):
    def round_recorded(self, record: RoundRecord) -> None:
        """``record`` was just stored (finished or failed)."""

    def session_ended(self, session_id: str, status: SessionStatus, reason: str) -> None:
        """The session stopped running: finished, failed, stopped or cancelled."""


class Watchers:
    """Every watcher, told in the order they were given."""

    def __init__(self, *watchers: SessionWatcher) -> None:
        self._watchers = list(watchers)

    def round_recorded(self, record: RoundRecord) -> None:
        for watcher in self._watchers:
            watcher.round_recorded(record)

    def session_ended(self, session_id: str, status: SessionStatus, reason: str) -> None:
        for watcher in self._watchers:
            watcher.session_ended(session_id, status, reason)


def round_summary(record: RoundRecord) -> dict[str, object]:
    """The numbers of one round that an operator follows: the log line's fields."""
    traffic = record.traffic
    moved = traffic.moved  # both links, both ways
    return {
        "session": record.session_id,
        "round": record.number,
        "status": record.status.value,
        "clients": len(record.participants),
        "accuracy": record.validation.mean("accuracy"),
        "loss": record.validation.mean("loss"),
        "seconds": round(record.duration, 3),
        "mb_moved": round(moved / MEGABYTE, 3),
    }


class RoundLog:
    """One INFO line per round; its fields are also the extras of a ``--log-format json``
    line, so a log shipper can chart them without parsing the message."""

    def round_recorded(self, record: RoundRecord) -> None:
        fields = round_summary(record)
        reason = f" ({_one_line(record.reason)})" if record.reason else ""
        log.info(
            "session %s round %d %s: %d clients, accuracy %s, loss %s, %.2f s, %.1f MB moved%s",
            record.session_id,
            record.number,
            record.status.value,
            fields["clients"],
            _number(record.validation.mean("accuracy")),
            _number(record.validation.mean("loss")),
            record.duration,
            fields["mb_moved"],
            reason,
            extra=fields,
        )

    def session_ended(self, session_id: str, status: SessionStatus, reason: str) -> None:
        log.info(
            "session %s %s%s",
            session_id,
            status.value,
            f": {_one_line(reason)}" if reason else "",
            extra={"session": session_id, "status": status.value},
        )


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _one_line(text: str) -> str:
    return " ".join(text.split())[:500]
