"""`strata session watch`: a session's progress, live, from its event stream.

A bar over the rounds, one line per round as it closes (round, status, accuracy, loss,
the worst client's accuracy, seconds, megabytes moved on both tiers), and the session's
end line; or, with ``--format json``, each event as one line of JSON for a script. The
view is driven by events only (`ControllerClient.follow`), so it shows a session that
ended long ago the same way (the stream replays it) and survives dropped connections.
"""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from stratafl.records import SESSION_END_KINDS, EventRecord, RoundProgress
from stratafl.restapi import Session
from stratafl.status import RoundStatus, SessionStatus

__all__ = ["HEADER", "round_line", "exit_code", "watch_events", "watch_json"]

HEADER = (
    f"{'round':>5}  {'status':<9} {'accuracy':>8} {'loss':>8} {'worst':>8} {'seconds':>8} {'MB':>9}"
)
GOOD_ENDS = frozenset({f"session_{SessionStatus.FINISHED}", f"session_{SessionStatus.STOPPED}"})


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def round_line(progress: RoundProgress) -> str:
    """One closed round as a line under `HEADER`."""
    moved = progress.bytes
    megabytes = (
        moved.clients_up + moved.clients_down + moved.combiners_up + moved.combiners_down
    ) / 1e6
    worst = progress.client_accuracy.worst if progress.client_accuracy else None
    return (
        f"{progress.round:>5}  {progress.status:<9} {_number(progress.accuracy):>8} "
        f"{_number(progress.loss):>8} {_number(worst):>8} {progress.duration:>8.2f} "
        f"{megabytes:>9.2f}"
    )


def exit_code(end: EventRecord | None) -> int:
    """0 for a session that finished or was stopped; 1 if it failed, was cancelled, or the
    stream ended without its end."""
    return 0 if end is not None and end.kind in GOOD_ENDS else 1


def watch_json(events: Iterable[EventRecord]) -> int:
    """Print each event as one line of JSON; the exit code of the session's end."""
    end = None
    for event in events:
        print(event.model_dump_json(), flush=True)
        if event.kind in SESSION_END_KINDS:
            end = event
    return exit_code(end)


def watch_events(session: Session, events: Iterable[EventRecord], console: Console) -> int:
    """Draw the session's progress from its events; the exit code of the session's end."""
    total = session.config.rounds
    bar = Progress(
        TextColumn(f"[bold]session {session.id}"),
        MofNCompleteColumn(),
        BarColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        console=console,
    )
    task = bar.add_task("rounds", total=total, status="waiting for its events")
    end: EventRecord | None = None
    with bar:
        console.print(HEADER)
        for event in events:
            if event.kind == "round_started":
                clients = event.data.get("clients_selected", "?")
                status = f"round {event.data.get('round', '?')}: {clients} clients asked"
                bar.update(task, status=status)
            elif event.kind in ("round_finished", "round_failed"):
                progress = _progress(event)
                if progress is None:
                    continue
                console.print(round_line(progress))
                if progress.status == RoundStatus.FINISHED:
                    bar.update(task, completed=progress.round, status=f"round {progress.round}")
            elif event.kind in SESSION_END_KINDS:
                end = event
                bar.update(task, status=event.kind.removeprefix("session_"))
    reason = f": {end.data['reason']}" if end is not None and end.data.get("reason") else ""
    what = end.kind.removeprefix("session_") if end is not None else "stream ended"
    console.print(f"session {session.id} {what}{reason}")
    return exit_code(end)


def _progress(event: EventRecord) -> RoundProgress | None:
    """The round in a round event; None for one recorded before events carried it."""
    try:
        return RoundProgress.model_validate(event.data)
    except ValidationError:
        return None
