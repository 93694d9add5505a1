"""Data sources behind every screen: embedded node, attached control endpoints, recordings."""
