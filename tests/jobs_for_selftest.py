"""Trivial RQ jobs for tests/test_fakes.py (importable by name from a forked work horse)."""

import os


def add(a, b):
    return {"sum": a + b, "pid": os.getpid()}
