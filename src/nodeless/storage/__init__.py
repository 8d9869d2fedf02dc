"""Revisioned key-value stores with watch: the Backend protocol and its implementations."""

