"""Screens: one class per module."""
