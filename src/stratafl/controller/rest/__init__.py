"""The controller's REST API (FastAPI): one router per resource, auth, bounds and errors.

`app.build_app` assembles the routers; the bodies it exchanges live in `stratafl.restapi`,
which the Python client (`ControllerClient`) shares.
"""
