"""Benchmarks that measure reprieve against restic and borg on the same data in the same run.

Not part of the installed package: run ``python bench/run.py`` (or ``make bench``) from a
checkout. The modules are importable as ``bench.*`` so their names cannot collide with
other top-level scripts when mypy checks the whole tree.
"""
