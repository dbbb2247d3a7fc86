"""The live dashboard: a static page that the controller serves at ``/``.

The page holds no data and no secret. It is our own small HTML, CSS and JavaScript (no
build step) plus plotly.js from the installed ``plotly`` wheel, so it works offline; every
number it shows is fetched by the browser from the REST API with the admin token the user
types in. `routes` lists the files and the headers they are served with;
`stratafl.controller.rest.dashboard` serves them.
"""

from stratafl.dashboard.routes import (
    CONTENT_SECURITY_POLICY,
    PAGE_PATH,
    SCRIPT_PATH,
    STYLE_PATH,
    StaticFile,
    static_files,
)

__all__ = [
    "CONTENT_SECURITY_POLICY",
    "PAGE_PATH",
    "SCRIPT_PATH",
    "STYLE_PATH",
    "StaticFile",
    "static_files",
]
