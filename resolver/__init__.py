"""flex-media-resolver: short-lived, audited access to Flex Insights media."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import create_app

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    # Imported on first use, so `resolver.ops.gunicorn_config` can set PROMETHEUS_MULTIPROC_DIR before the app
    # (and prometheus_client) is imported in gunicorn's master.
    if name == "create_app":
        from .app import create_app

        return create_app
    raise AttributeError(name)
