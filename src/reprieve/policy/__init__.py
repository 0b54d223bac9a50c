"""Retention policy: which recovery points to keep."""
