"""The one place an exception becomes what a person sees: ``error: ...``, one line on stderr
that names the fix, and exit code 2 (130 after Ctrl-C); ``strata --debug`` re-raises it with
its traceback instead.

    StrataError and its subclasses   its message (each names the fix already)
    ImportError of an optional extra pip install 'stratafl[EXTRA]'
    OSError EADDRINUSE               the address that is taken, and --port
    pydantic ValidationError         the field, its value and what it should be
    anything else                    its type and message, and --debug for the traceback
    Ctrl-C                           "interrupted", exit 130

The line is printed with plain `print`, never through rich: markup would eat the brackets
of ``stratafl[torch]``, and wrapping at the terminal's width would make it several lines.
"""

from __future__ import annotations

import errno
import sys
from collections.abc import Iterator, Mapping, Sequence

import typer
from pydantic import ValidationError as PydanticValidationError
from typer.exceptions import TyperException

from stratafl.cli.config import GlobalOptions
from stratafl.errors import StrataError

__all__ = ["EXTRAS", "INTERRUPTED", "USAGE", "one_line", "run"]

USAGE = 2
"""The exit code of every mistake a person can fix (click's own usage errors use it too)."""
INTERRUPTED = 130
"""128 + SIGINT, as a shell reports Ctrl-C."""

EXTRAS: Mapping[str, str] = {
    "torch": "torch",
    "psycopg": "postgres",
    "s3fs": "s3",
    "mlflow": "mlflow",
    "matplotlib": "experiments",
}
"""Top-level module -> the optional extra of pyproject.toml that installs it."""


def run(app: typer.Typer, args: Sequence[str] | None = None) -> int:
    """Run ``app`` as `strata` does and return the process's exit code."""
    options = GlobalOptions()
    try:
        code = app(args=args, obj=options, standalone_mode=False)
    except TyperException as exc:  # click's usage errors: its usage text, its exit code
        show = getattr(exc, "show", None)
        if callable(show):
            show()
        else:
            print(f"error: {exc.format_message()}", file=sys.stderr)
        return int(exc.exit_code)
    except typer.Abort:
        return _say("interrupted", INTERRUPTED)
    except Exception as exc:  # the boundary: whatever a command raised ends here
        if options.debug:
            raise
        return _say(one_line(exc), USAGE)
    if code == INTERRUPTED:  # typer turns Ctrl-C into Exit(130), silently
        return _say("interrupted", INTERRUPTED)
    return code if isinstance(code, int) else 0


def _say(line: str, code: int) -> int:
    print(f"error: {line}", file=sys.stderr, flush=True)
    return code


def one_line(exc: BaseException) -> str:
    """What a person reads about ``exc``: one line, naming the fix."""
    if isinstance(exc, StrataError | ImportError):
        text = str(exc)
    elif isinstance(exc, PydanticValidationError):
        text = validation_line(exc)
    elif isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
        text = f"the address is already in use ({exc.strerror}): pick another port with --port"
    else:
        text = f"{type(exc).__name__}: {exc} (run `strata --debug ...` for the traceback)"
    extra = _missing_extra(exc)
    if extra is not None and "stratafl[" not in text:
        module, name = extra
        text = f"{text}; {module} comes with an optional extra: pip install 'stratafl[{name}]'"
    return " ".join(text.split())


def validation_line(exc: PydanticValidationError) -> str:
    """The first failed field, its value and pydantic's reason (which names the bound)."""
    first = exc.errors()[0]
    field = ".".join(str(part) for part in first["loc"])
    reason = first["msg"].removeprefix("Value error, ")
    more = exc.error_count() - 1
    tail = f" (and {more} more)" if more else ""
    if not field:
        return f"{reason}{tail}"
    return f"{field}={first.get('input')!r}: {reason}{tail}"


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _missing_extra(exc: BaseException) -> tuple[str, str] | None:
    """(module, extra) if ``exc`` is, or was caused by, importing an extra's module."""
    for link in _chain(exc):
        if isinstance(link, ImportError) and link.name:
            module = link.name.partition(".")[0]
            if module in EXTRAS:
                return module, EXTRAS[module]
    return None
