"""`GeventWorker`: an RQ worker that answers many questions at once in one process.

Answer jobs wait on the network (the LLM's stream, a platform's API, Redis) and spend milliseconds of
CPU, so one process runs up to CHATGATE_WORKER_CONCURRENCY of them at once, each in a greenlet of a
`gevent.pool.Pool` (the process is monkey-patched by gevent before anything else is imported: see
`bot/cli/__init__.py`). Nothing is forked per job: the store, the Redis pool, the LLM client and the
senders are built once per process (`workers.answer.open_context`).

Jobs stay RQ jobs: each is taken off the queue only when a slot of the pool is free, and RQ's own
`perform_job` runs it, so the StartedJobRegistry and its executions, results, the failed registry,
retries with intervals, `on_failure` callbacks and job timeouts (a `gevent.Timeout` per greenlet,
`workers/timeouts.py`) all work as for RQ's SimpleWorker, per job. What RQ keeps on the worker for the
job it runs (its `execution`) is kept per greenlet. Upkeep runs in greenlets of its own:

- heartbeats for the worker and for every job in flight (each `job_monitoring_interval`), so that RQ
  and the reconciler see them alive however long they wait;
- RQ's scheduler (retries with back-off), when this worker holds its lock;
- RQ's maintenance (cleaning registries of dead workers' jobs), chatgate's reconciler (every
  CHATGATE_RECONCILE_INTERVAL, one pass at a time across workers) and the LLM probe for `/readyz`.

Stopping: SIGTERM or SIGINT stops the dequeueing and lets the answers in flight finish, for up to
CHATGATE_STOP_GRACE seconds less a margin (so a `chatgate up` stopping us never has to kill); jobs
still waiting for their turn give their question back at once. A second signal (a second later or
more), or the grace running out, stops at once: every job left is given back (`GiveBack`: a try cut
short is not counted, and the question is queued again at once) rather than left for its lease to
run out.
"""

from __future__ import annotations

import logging
import signal
import time
from dataclasses import dataclass

import gevent
import redis.exceptions
from gevent.event import Event
from gevent.local import local
from gevent.monkey import is_module_patched
from gevent.pool import Pool
from rq.exceptions import DequeueTimeout, StopRequested
from rq.executions import Execution
from rq.intermediate_queue import IntermediateQueue
from rq.job import Job
from rq.queue import Queue
from rq.scheduler import RQScheduler
from rq.utils import now as utcnow
from rq.worker import BaseWorker, WorkerStatus
from rq.worker.base import DequeueStrategy

from bot.errors import GiveBack
from config import load_settings
from workers import answer, probe
from workers.reconcile import run_if_due
from workers.timeouts import GreenletDeathPenalty

log = logging.getLogger("chatgate.worker")

DEQUEUE_WAIT_S = 1
"""How long the dequeue waits on the queue before it looks whether it should stop."""
STOP_MARGIN_S = 3.0
"""A warm stop gives back what is left this long before CHATGATE_STOP_GRACE runs out."""
GIVE_BACK_WAIT_S = 5.0
"""How long a cold stop waits for the jobs it told to give back."""


@dataclass
class InFlight:
    """A job this worker runs: the job, its RQ execution and its greenlet."""

    job: Job
    execution: object
    greenlet: gevent.Greenlet


class GeventWorker(BaseWorker):
    """RQ's worker for many jobs at once in greenlets, with chatgate's reconciler (see the module)."""

    death_penalty_class = GreenletDeathPenalty
    log_result_lifespan = False  # RQ's "result is kept for 3600 seconds", once per answer
    log_job_description = False  # RQ's line per job names the job by its id, not its arguments

    def __init__(self, queues, *args, concurrency: int | None = None, **kwargs):
        self._local = local()  # before RQ's __init__, which sets `execution`
        self.settings = load_settings()
        self.concurrency = concurrency or self.settings.worker_concurrency
        kwargs.setdefault("worker_ttl", max(20, int(self.settings.reconcile_interval) + 15))
        kwargs.setdefault("maintenance_interval", max(60, int(self.settings.reconcile_interval)))
        super().__init__(queues, *args, **kwargs)
        # Every job in flight may hold a Redis connection of the worker's pool for RQ's bookkeeping (RQ's
        # WorkerPool gives each worker a pool of redis-py's default size, 100).
        pool = self.connection.connection_pool
        pool.max_connections = max(pool.max_connections, self.concurrency + 50)
        self._pool = Pool(self.concurrency)
        self._running: dict[str, InFlight] = {}
        self._stopping = Event()
        self._cold = Event()
        self._stop_at = 0.0
        self._next_reconcile = 0.0
        self._reconciling: gevent.Greenlet | None = None
        self._probed = False
        self._done = 0
        self.ctx: answer.Context | None = None

    # -- what RQ keeps per job, kept per greenlet ---------------------------------------------------

    @property
    def execution(self):
        """The RQ execution of the job this greenlet runs."""
        return getattr(self._local, "execution", None)

    @execution.setter
    def execution(self, value) -> None:
        self._local.execution = value

    def set_current_job_id(self, job_id=None, pipeline=None) -> None:
        """Not kept: the worker runs many jobs; the StartedJobRegistry lists them."""

    def set_current_job_working_time(self, current_job_working_time, pipeline=None) -> None:
        self.current_job_working_time = 0

    def get_heartbeat_ttl(self, job: Job) -> int:
        return self.job_monitoring_interval + 60

    # -- RQ's bookkeeping of a job, in fewer round trips --------------------------------------------

    def prepare_execution(self, job: Job) -> None:
        """Done in `prepare_job_execution`, in the same round trip."""

    def prepare_job_execution(self, job: Job, remove_from_intermediate_queue: bool = False) -> None:
        """RQ's two preparations of a job (its execution in the StartedJobRegistry; the job started, by
        this worker) in one round trip. The worker's own heartbeat is left to the upkeep."""
        with self.connection.pipeline() as pipeline:
            self.execution = Execution.create(job, self.get_heartbeat_ttl(job), pipeline=pipeline,
                                              worker_name=self.name)
            if self._state != WorkerStatus.BUSY:
                self.set_state(WorkerStatus.BUSY, pipeline=pipeline)
            job.prepare_for_execution(self.name, pipeline=pipeline)
            if remove_from_intermediate_queue:
                queue_key = self.queue_class.redis_queue_namespace_prefix + job.origin
                pipeline.lrem(IntermediateQueue.get_intermediate_queue_key(queue_key), 1, job.id)
            pipeline.execute()
        self._running[job.id] = InFlight(job, self.execution, gevent.getcurrent())

    def handle_execution_ended(self, job: Job, queue: Queue, heartbeat_ttl: int) -> None:
        """The job's end time (its heartbeat is the upkeep's: no round trip here)."""
        job.ended_at = utcnow()

    def handle_job_success(self, job: Job, queue: Queue, started_job_registry) -> None:
        """RQ's bookkeeping of a finished job in one transaction, without RQ's WATCH on the job's
        dependents: they are read inside the transaction, and queued after it (as RQ queues them)."""
        result_ttl = job.get_result_ttl(self.default_result_ttl)
        with self.connection.pipeline() as pipeline:
            pipeline.smembers(job.dependents_key)
            self.increment_successful_job_count(pipeline=pipeline)
            self.increment_total_working_time(job.ended_at - job.started_at, pipeline)
            if result_ttl != 0:
                job._handle_success(result_ttl, pipeline=pipeline, worker_name=self.name,
                                    execution_id=self.execution.id if self.execution else None,
                                    execution_started_at=self.execution.created_at if self.execution else None,
                                    execution_ended_at=job.ended_at)
            if job.repeats_left is not None and job.repeats_left > 0:
                from rq.repeat import Repeat

                Repeat.schedule(job, queue, pipeline=pipeline)
            else:
                job.cleanup(result_ttl, pipeline=pipeline, remove_from_queue=False)
            self.cleanup_execution(job, pipeline=pipeline)
            dependents = pipeline.execute()[0]
        if dependents:
            queue.enqueue_dependents(job)
        self.log.debug("Worker %s: job %s done in %s", self.name, job.id, job.ended_at - job.started_at)

    # -- the work loop ------------------------------------------------------------------------------

    def work(self, burst: bool = False, logging_level: str | None = None, date_format: str | None = None,
             log_format: str | None = None, max_jobs: int | None = None, max_idle_time: int | None = None,
             with_scheduler: bool = False, dequeue_strategy: DequeueStrategy = DequeueStrategy.DEFAULT) -> bool:
        """Take jobs while a slot is free and run them, until stopped (or, in `burst` mode, until the
        queue is empty and every job is done). Returns whether any job ran."""
        formats = {k: v for k, v in (("date_format", date_format), ("log_format", log_format)) if v}
        self.bootstrap(logging_level, **formats)
        self._dequeue_strategy = dequeue_strategy
        self.ctx = answer.open_context(self.settings, cooperative=is_module_patched("socket"))
        self.ctx.stopping = self._stopping
        self.ctx.warm_up()
        self._install_signal_handlers()
        log.info("worker %s: up to %d answers at once", self.name, self.concurrency)
        self.run_maintenance_tasks()  # as RQ does before its first job; then the reconciler and the probe
        self._next_reconcile = time.monotonic() + self.settings.reconcile_interval
        if burst:
            self._reconcile()
        else:
            self._reconciling = gevent.spawn(self._reconcile)
        upkeep = gevent.spawn(self._upkeep)
        scheduler = None
        if with_scheduler:
            if burst:
                self._start_scheduler(burst=True)  # RQ's: one pass over the due retries
            else:
                scheduler = gevent.spawn(self._schedule)
        try:
            self._feed(burst, max_jobs)
            if scheduler is not None:  # its lock goes to another worker's scheduler now
                scheduler.kill(timeout=5)
            self._drain(burst)
        finally:
            gevent.killall([g for g in (upkeep, scheduler, self._reconciling) if g is not None], timeout=5)
            self.teardown()
            answer.close_context()
            self.ctx = None
        return bool(self._done)

    def _feed(self, burst: bool, max_jobs: int | None) -> None:
        """Take a job off the queue whenever a slot is free, until told to stop."""
        taken = 0
        connection_wait = 1.0
        while not self._stopping.is_set():
            if not self._pool.wait_available(timeout=DEQUEUE_WAIT_S):
                continue
            try:
                self.check_for_suspension(burst)
            except StopRequested:
                break
            if not len(self._pool) and self.get_state() != WorkerStatus.IDLE:
                self.set_state(WorkerStatus.IDLE)
            try:
                result = self.queue_class.dequeue_any(
                    self._ordered_queues, None if burst else DEQUEUE_WAIT_S, connection=self.connection,
                    job_class=self.job_class, serializer=self.serializer, death_penalty_class=self.death_penalty_class)
                connection_wait = 1.0
            except DequeueTimeout:
                continue
            except redis.exceptions.ConnectionError as exc:
                log.error("worker %s: cannot reach Redis (%s); trying again in %gs", self.name, exc, connection_wait)
                self._stopping.wait(connection_wait)
                connection_wait = min(connection_wait * 2, self.max_connection_wait_time)
                continue
            if result is None:  # burst, and nothing queued right now
                if not len(self._pool):
                    break
                gevent.wait(list(self._pool), count=1, timeout=1)
                continue
            job, queue = result
            if self._stopping.is_set():  # the stop came while it waited on the queue
                self._put_back(job, queue)
                break
            self.reorder_queues(reference_queue=queue)
            job.redis_server_version = self.get_redis_server_version()
            self._pool.spawn(self._run, job, queue)
            taken += 1
            if max_jobs is not None and taken >= max_jobs:
                break

    def _put_back(self, job: Job, queue: Queue) -> None:
        """Return a job taken off the queue to its head, for another worker."""
        with self.connection.pipeline() as pipeline:
            pipeline.lrem(queue.intermediate_queue_key, 1, job.id)
            queue.push_job_id(job.id, pipeline=pipeline, at_front=True)
            pipeline.execute()

    def _run(self, job: Job, queue: Queue) -> None:
        """One job, in its own greenlet, as RQ's SimpleWorker runs it."""
        try:
            self.perform_job(job, queue)
        except BaseException:  # RQ settles the job's own failures; this is its bookkeeping failing
            log.exception("worker %s: job %s could not be run to its end", self.name, job.id)
        finally:
            self._running.pop(job.id, None)
            self._done += 1

    def _drain(self, burst: bool) -> None:
        """Let the jobs in flight finish (when stopped: within the grace, then give back what is left)."""
        if burst or not self._stopping.is_set():
            self._pool.join()
            return
        grace = max(1.0, self.settings.stop_grace - STOP_MARGIN_S)
        log.info("worker %s: warm shut down requested; %d answers in flight finish first (up to %gs; stop again to "
                 "give them back at once)", self.name, len(self._pool), grace)
        deadline = self._stop_at + grace
        while len(self._pool) and not self._cold.is_set() and time.monotonic() < deadline:
            self._cold.wait(min(0.2, max(deadline - time.monotonic(), 0.01)))
        if len(self._pool):
            self._give_back_all()

    def _give_back_all(self) -> None:
        left = list(self._pool)
        log.warning("worker %s: stopping at once; %d answers in flight are given back", self.name, len(left))
        for greenlet in left:
            greenlet.kill(GiveBack("the worker stopped"), block=False)
        if not self._pool.join(timeout=GIVE_BACK_WAIT_S):
            self._pool.kill(block=True, timeout=1)

    # -- signals ----------------------------------------------------------------------------------

    def _install_signal_handlers(self) -> None:
        signal.signal(signal.SIGINT, self._on_stop_signal)
        signal.signal(signal.SIGTERM, self._on_stop_signal)

    def _on_stop_signal(self, signum, frame) -> None:
        """Only flags: this may run in gevent's hub or in the middle of any job."""
        now = time.monotonic()
        if not self._stopping.is_set():
            self._stop_at = now
            self._stop_requested = True  # RQ's own flag: a worker suspended by `rq suspend` stops too
            self._stopping.set()
        elif now - self._stop_at >= 1:  # the same signal sent twice at once (a pool and a process group)
            self._cold.set()

    def request_stop(self, signum, frame) -> None:
        self._on_stop_signal(signum, frame)

    # -- upkeep -------------------------------------------------------------------------------------

    def _upkeep(self) -> None:
        """Heartbeats, RQ's maintenance, the reconciler and the LLM probe, each on its own schedule."""
        next_beat = 0.0
        while True:
            now = time.monotonic()
            try:
                if now >= next_beat:
                    next_beat = now + min(self.job_monitoring_interval, self.worker_ttl / 3)
                    self._heartbeats()
                if not self._stopping.is_set():
                    self._maintain(now)
            except Exception:
                log.exception("worker %s: upkeep failed; trying again", self.name)
            gevent.sleep(1)

    def _maintain(self, now: float) -> None:
        if self.should_run_maintenance_tasks:
            self.run_maintenance_tasks()
        if now >= self._next_reconcile and (self._reconciling is None or self._reconciling.dead):
            self._next_reconcile = now + self.settings.reconcile_interval
            self._reconciling = gevent.spawn(self._reconcile)  # the heartbeats go on meanwhile

    def _heartbeats(self) -> None:
        """One round trip: the worker's heartbeat and those of every job in flight and its execution."""
        ttl = self.job_monitoring_interval + 60
        with self.connection.pipeline() as pipeline:
            self.heartbeat(self.worker_ttl + 60, pipeline=pipeline)
            for flight in list(self._running.values()):
                if flight.execution is not None:
                    flight.execution.heartbeat(flight.job.started_job_registry, ttl, pipeline=pipeline)
                flight.job.heartbeat(utcnow(), ttl, pipeline=pipeline)
            pipeline.execute()

    def _reconcile(self) -> None:
        try:
            run_if_due(self.ctx, self.settings.reconcile_interval)
        except StopRequested:
            raise
        except Exception:
            log.exception("the reconciler failed")
        try:
            probe.probe_if_due(self.settings, self.connection, starting=not self._probed)
            self._probed = True
        except StopRequested:
            raise
        except Exception as exc:
            log.warning("the LLM probe failed: %s", exc)

    def _schedule(self) -> None:
        """RQ's scheduler, in a greenlet rather than a process: while this worker holds the lock of the
        queue, it moves retries that are due back to it, every second."""
        scheduler = RQScheduler(self.queues, connection=self.connection, serializer=self.serializer)
        born = False
        try:
            while True:
                try:
                    if not scheduler.acquired_locks or scheduler.should_reacquire_locks:
                        scheduler.acquire_locks()
                    if scheduler.acquired_locks:
                        if not born:
                            scheduler.register_birth()
                            born = True
                        scheduler.heartbeat()
                        scheduler.enqueue_scheduled_jobs()
                except redis.exceptions.RedisError as exc:
                    log.warning("the scheduler could not reach Redis (%s)", exc)
                gevent.sleep(scheduler.interval)
        finally:
            try:
                scheduler.release_locks()
                if born:
                    scheduler.register_death()
            except redis.exceptions.RedisError:
                pass
