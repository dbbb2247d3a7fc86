"""The dashboard's routes as one table: each URL, the file behind it and how it is served.

Three routes serve every file: the page at `PAGE_PATH`, its scripts at `SCRIPT_PATH`
(ours, plus ``plotly.min.js`` from the installed plotly wheel, found with
importlib.resources so nothing is copied into this repository) and its style sheet at
`STYLE_PATH`. They are public in `stratafl.security.policy.REST_ROLES`: the files carry
no data, and every API call the page makes carries the admin token.

Every answer carries `CONTENT_SECURITY_POLICY`: scripts only from the controller itself,
no inline script, no eval, no other origin to talk to; a hostile record (a client id, a
failure reason) rendered by the page can therefore never run as code.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable

from stratafl.errors import ConfigError

__all__ = [
    "CONTENT_SECURITY_POLICY",
    "PAGE_PATH",
    "SCRIPT_PATH",
    "STYLE_PATH",
    "StaticFile",
    "static_files",
]

PAGE_PATH = "/"
SCRIPT_PATH = "/dashboard/{name}.js"
STYLE_PATH = "/dashboard/style.css"

OUR_SCRIPTS = ("api", "app", "panels", "plots", "stream")
"""The page's own ES modules (``/dashboard/<name>.js``), loaded by ``app.js``."""
PLOTLY = "plotly.min"
"""plotly.js, served from the plotly wheel at ``/dashboard/plotly.min.js``."""
_JS = "text/javascript; charset=utf-8"

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "connect-src 'self'",
        "img-src 'self' data: blob:",
        # plotly.js adds <style> rules and style attributes as it draws (refused otherwise);
        # a style runs no code, and the page never inserts HTML, only text
        "style-src 'self' 'unsafe-inline'",
        "base-uri 'none'",
        "form-action 'none'",  # the page's forms are handled by its script, never posted
        "frame-ancestors 'none'",
    ]
)
"""The page's Content-Security-Policy: code from the controller only, data from its API."""

SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
"""Headers of every dashboard file."""

OURS_MAX_AGE = 0
"""Our files change with every stratafl release: browsers ask again each time."""
PLOTLY_MAX_AGE = 24 * 3600
"""plotly.js is 4.8 MB and changes only with the plotly wheel: browsers keep it a day."""


@dataclass(frozen=True)
class StaticFile:
    """One file of the dashboard and how it is served."""

    url: str
    source: Traversable
    media_type: str
    max_age: int

    def headers(self) -> dict[str, str]:
        """The security headers and the caching of this file."""
        cache = f"private, max-age={self.max_age}" if self.max_age else "no-cache"
        return {**SECURITY_HEADERS, "Cache-Control": cache}


def static_files() -> dict[str, StaticFile]:
    """Every file of the dashboard by URL; a missing one names the fix (reinstall)."""
    ours = files("stratafl.dashboard")
    plotly_js = files("plotly") / "package_data" / f"{PLOTLY}.js"
    table = [
        StaticFile(PAGE_PATH, ours / "index.html", "text/html; charset=utf-8", OURS_MAX_AGE),
        StaticFile(STYLE_PATH, ours / "style.css", "text/css; charset=utf-8", OURS_MAX_AGE),
        *(
            StaticFile(_script(name), ours / f"{name}.js", _JS, OURS_MAX_AGE)
            for name in OUR_SCRIPTS
        ),
        StaticFile(_script(PLOTLY), plotly_js, _JS, PLOTLY_MAX_AGE),
    ]
    for entry in table:
        if not entry.source.is_file():
            raise ConfigError(
                f"the dashboard file for {entry.url} is missing ({entry.source}); "
                "reinstall stratafl and plotly (`pip install --force-reinstall stratafl`)"
            )
    return {entry.url: entry for entry in table}


def _script(name: str) -> str:
    return SCRIPT_PATH.replace("{name}", name)
