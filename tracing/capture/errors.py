"""The one exception a capture reader raises: its message is meant for the user."""

from __future__ import annotations


class CaptureError(Exception):
    """A capture or key log that cannot be read at all; the message says what to do."""
