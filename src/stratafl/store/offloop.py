"""The state store's blocking calls, run in worker threads so an event loop never waits on SQL.

The controller's gRPC and REST handlers share one event loop with the rounds. A store call
made there (a combiner heartbeat, a page of clients) would stop every round, stream and
heartbeat for as long as the database takes: on PostgreSQL a network round trip each.
Handlers therefore ``await store.off_loop.write(...)`` or ``.read(...)``; the transactions
themselves are the store's own, unchanged, so their atomicity is too.

- Writes run on **one** thread, in the order they were submitted: the order in which the
  loop decided things (a heartbeat, then the sweep that marks that combiner offline) is
  the order the database sees, and SQLite, which has one writer, never waits on a lock.
- Reads run on a small pool of threads (SQLite in WAL mode reads beside its writer).

Both are bounded, so a burst of requests queues here instead of opening connections
without end; the threads start on first use (a constructor starts nothing) and stop in
`close`, after which a new call starts them again.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

__all__ = ["DEFAULT_READERS", "OffLoop"]

P = ParamSpec("P")
T = TypeVar("T")

DEFAULT_READERS = 4
"""Reader threads: enough that a slow page of rounds does not hold up a page of clients,
few enough to stay inside SQLAlchemy's default pool of five connections beside the writer."""


class OffLoop:
    """An ordered writer thread and a bounded pool of reader threads for a store's calls."""

    def __init__(self, *, readers: int = DEFAULT_READERS, name: str = "store") -> None:
        if readers < 1:
            raise ValueError(f"readers must be at least 1, not {readers}")
        self._readers = readers
        self._name = name
        self._write_thread: ThreadPoolExecutor | None = None
        self._read_threads: ThreadPoolExecutor | None = None

    def write(
        self, call: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs
    ) -> asyncio.Future[T]:
        """Run ``call`` on the writer thread, after every write submitted before it; await
        the answer for its result.

        It is submitted when called, not when awaited: a caller that decides several
        things in one step of the loop submits their writes in that order before it
        awaits any, and no other coroutine's write can land between them."""
        if self._write_thread is None:
            self._write_thread = ThreadPoolExecutor(1, thread_name_prefix=f"{self._name}-write")
        return _run_in(self._write_thread, call, *args, **kwargs)

    def read(self, call: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> asyncio.Future[T]:
        """Run ``call`` on one of the reader threads; await the answer for its result."""
        if self._read_threads is None:
            self._read_threads = ThreadPoolExecutor(
                self._readers, thread_name_prefix=f"{self._name}-read"
            )
        return _run_in(self._read_threads, call, *args, **kwargs)

    def close(self) -> None:
        """Wait for the calls in flight, then stop the threads."""
        for threads in (self._write_thread, self._read_threads):
            if threads is not None:
                threads.shutdown(wait=True)
        self._write_thread = self._read_threads = None


def _run_in(
    threads: ThreadPoolExecutor, call: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs
) -> asyncio.Future[T]:
    """``call`` submitted to ``threads`` now, as a future of the running loop."""
    loop = asyncio.get_running_loop()
    return loop.run_in_executor(threads, functools.partial(call, *args, **kwargs))
