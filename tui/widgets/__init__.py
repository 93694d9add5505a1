"""Widgets: one class per module, each with its own DEFAULT_CSS."""
