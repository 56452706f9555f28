"""flex-media-resolver: short-lived, audited access to Flex Insights media."""

from .app import create_app

__all__ = ["create_app"]
