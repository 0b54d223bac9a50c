"""Runbooks: failover and failback plans made of typed steps, planned, run, and recorded."""
