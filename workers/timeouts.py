"""Job timeouts for jobs that run in greenlets, side by side in one process.

RQ ends a job that outlives its timeout with a death penalty: by default SIGALRM, which a process has
only one of. `GreenletDeathPenalty` gives each job its own `gevent.Timeout` instead, which raises RQ's
`JobTimeoutException` in that job's greenlet only, the next time it waits on the network or a sleep;
the other jobs go on. (A job that never yields to gevent cannot be interrupted; ours always do.)

`restart_job_timeout()` starts the current job's clock again: time a job spends waiting for its turn
(an LLM slot of CHATGATE_LLM_CONCURRENCY) is time in a queue, not work.
"""

from __future__ import annotations

import gevent
from gevent.local import local
from rq.timeouts import BaseDeathPenalty, JobTimeoutException

_current = local()


class GreenletDeathPenalty(BaseDeathPenalty):
    """RQ's death penalty as a `gevent.Timeout` of the job's own greenlet."""

    def __init__(self, timeout, exception=JobTimeoutException, **kwargs):
        super().__init__(timeout, exception, **kwargs)
        self._timer: gevent.Timeout | None = None

    def setup_death_penalty(self) -> None:
        if not self._timeout or self._timeout <= 0:
            return
        message = f"Task exceeded maximum timeout value ({self._timeout} seconds)"
        self._timer = gevent.Timeout(self._timeout, self._exception(message))
        self._timer.start()
        _current.penalty = self

    def cancel_death_penalty(self) -> None:
        if self._timer is not None:
            self._timer.close()
            self._timer = None
        if getattr(_current, "penalty", None) is self:
            _current.penalty = None

    def restart(self) -> None:
        """Start the clock again from now."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer.start()


def restart_job_timeout() -> None:
    """Start the current job's timeout again from now (nothing happens outside a job)."""
    penalty = getattr(_current, "penalty", None)
    if penalty is not None:
        penalty.restart()
