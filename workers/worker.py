"""`ChatgateWorker`: RQ's worker with chatgate's two duties added.

- The reconciler runs among RQ's maintenance tasks, every CHATGATE_RECONCILE_INTERVAL seconds (the
  worker's idle wait on the queue is shortened to match, and a Redis key lets one worker of many run
  each pass).
- A stop signal wakes the worker at once: RQ's pubsub thread is started with SIGTERM and SIGINT blocked,
  so the kernel gives them to the main thread (see `subscribe`).
- A work-horse killed by a signal (the kernel's OOM killer, RQ's own kill of a hung job) cannot settle
  its try, and RQ calls no failure callback for it: the worker settles it at once, giving the
  question back for the next try or, after the last, giving it up (refunded, apology queued).

And two chores: the LLM endpoint is probed at the worker's start (`workers/probe.py`, for `/readyz`),
and each work-horse's metric files are folded into the worker's own when it exits
(`config/metric_files.py`), so that a job leaves no files behind.
"""

from __future__ import annotations

import logging
import os
import signal
import time

from rq import Worker
from rq.exceptions import StopRequested

from bot.delivery import ANSWERING
from bot.errors import TryKilled
from config import load_settings, metric_files
from workers import probe
from workers.answer import Context, settle_failed_try
from workers.reconcile import requeue, run_if_due

log = logging.getLogger("chatgate.worker")


class ChatgateWorker(Worker):
    """RQ's forking worker, with the reconciler and the settling of killed work-horses."""

    def __init__(self, *args, **kwargs):
        self.settings = load_settings()
        # The worker waits on the queue for worker_ttl - 15 s between maintenance checks.
        kwargs.setdefault("worker_ttl", max(20, int(self.settings.reconcile_interval) + 15))
        # RQ's own upkeep (cleaning registries of dead workers' jobs, taking over the scheduler of a
        # worker that died) every minute rather than every ten.
        kwargs.setdefault("maintenance_interval", max(60, int(self.settings.reconcile_interval)))
        super().__init__(*args, **kwargs)
        self._work_horse_killed_handler = self._settle_killed_horse
        self._next_reconcile = 0.0
        self._probed = False
        self._last_horse = 0

    @property
    def should_run_maintenance_tasks(self) -> bool:
        return super().should_run_maintenance_tasks or time.monotonic() >= self._next_reconcile

    def run_maintenance_tasks(self) -> None:
        if super().should_run_maintenance_tasks:
            super().run_maintenance_tasks()
        if time.monotonic() >= self._next_reconcile:
            self._next_reconcile = time.monotonic() + self.settings.reconcile_interval
            self._with_context("the reconciler", lambda ctx: run_if_due(ctx, self.settings.reconcile_interval))
            try:
                probe.probe_if_due(self.settings, self.connection, starting=not self._probed)
                self._probed = True
            except StopRequested:
                raise
            except Exception as exc:
                log.warning("the LLM probe failed: %s", exc)

    def fork_work_horse(self, job, queue) -> None:
        super().fork_work_horse(job, queue)
        self._last_horse = self._horse_pid

    def execute_job(self, job, queue) -> None:
        try:
            super().execute_job(job, queue)
        finally:
            try:
                metric_files.absorb(self._last_horse)
            except Exception:  # a metrics chore must never stop the worker
                log.exception("could not fold work-horse %s's metric files", self._last_horse)

    def subscribe(self) -> None:
        """RQ's `subscribe`, with its pubsub thread deaf to SIGTERM and SIGINT.

        The kernel hands a signal to any thread that does not block it, and Python runs handlers only
        in the main thread: a SIGTERM taken by the pubsub thread left an idle worker asleep in its
        BLPOP for up to the dequeue timeout (30 s) before it began its warm shutdown. The thread
        inherits the mask it is started with."""
        stop_signals = {signal.SIGTERM, signal.SIGINT}
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
        try:
            super().subscribe()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)

    def _settle_killed_horse(self, job, retpid, ret_val, rusage) -> None:
        facts = job.args[0] if job.args and isinstance(job.args[0], dict) else {}
        if "delivery_id" not in facts:
            return
        signal_no = os.WTERMSIG(ret_val) if ret_val and os.WIFSIGNALED(ret_val) else None

        def settle(ctx: Context) -> None:
            d = ctx.store.delivery(facts["delivery_id"])
            if d is None or d["status"] != ANSWERING:
                return
            settle_failed_try(ctx, d["id"], d["attempts"], TryKilled(f"work-horse killed (signal {signal_no})"),
                              job=job, push=False)
            d = ctx.store.delivery(d["id"])
            if d["status"] != ANSWERING and not job.retries_left:
                requeue(ctx, d, time.time())  # RQ will not run this job again: a new one goes on

        self._with_context(f"settling job {job.id}", settle)

    def _with_context(self, what: str, work) -> None:
        """Run `work(ctx)` on a context opened for the purpose (this process forks work-horses, which
        must not inherit open connections in use) and closed after; failures are logged, not raised."""
        try:
            ctx = Context(self.settings)
        except StopRequested:  # RQ's way out of an idle worker told to stop: it must reach RQ's loop
            raise
        except Exception as exc:
            log.error("%s could not start: %s", what, exc)
            return
        try:
            work(ctx)
        except StopRequested:
            raise
        except Exception:
            log.exception("%s failed", what)
        finally:
            ctx.close()
