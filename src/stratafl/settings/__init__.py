"""Typed settings at the edges: what a session asks of the federation."""

from stratafl.settings.session import SessionConfig

__all__ = ["SessionConfig"]
