"""The control plane's catalog: policy versions and the audit trail, in SQLite or PostgreSQL."""
