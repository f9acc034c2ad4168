"""The web console and REST API (FastAPI): prediction uploads, worklist, health and metrics."""

from web.app import create_app

__all__ = ["create_app"]
