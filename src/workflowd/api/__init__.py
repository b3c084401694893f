"""The HTTP layer: routes, problem errors and the app factory."""

from workflowd.api.app import create_app

__all__ = ["create_app"]
