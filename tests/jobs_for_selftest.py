"""Trivial RQ jobs for the tests (importable by name by a worker that has the checkout on its path)."""

import os
import time


def add(a, b):
    return {"sum": a + b, "pid": os.getpid()}


def nap(seconds):
    """Sleep (a greenlet's sleep, in a gevent worker) and say how long."""
    time.sleep(seconds)
    return {"slept": seconds, "pid": os.getpid()}
