"""Probes: measure one thing and return a fact. No pytest, no assertions, timeouts on every call."""
