"""Web UI for inspectors, senior inspectors, auditors and admins (``qa serve``)."""

from .app import create_app

__all__ = ["create_app"]
