"""reprieve: disaster recovery with encrypted, deduplicated, verified recovery points."""

__version__ = "0.1.0"
