"""The life of a delivery: one platform message, from admission to its last page, in SQLite.

A delivery's `status`; every move is one conditional write in the store (`… WHERE status = ?`), so a
stale actor (a late worker, a retried or duplicated job, the expiry) loses cleanly instead of acting
twice::

                admit (charged once)
    (message) ───────────────────────▶ queued ◀──────────── release: the try failed, tries are left
                                         │   ▲                (a job error or timeout, a lease that
                          start: a try   │   │                 ran out); give back: its worker
                          (attempts+1,   ▼   │                 stopped first (the try not counted)
                          lease)       answering ─────────────────────────┐ give up: tries spent or a
                                         │                                │ permanent error
                       record: answer +  │                                ▼
                       its pages, in one ▼                              failed ── refunded, apology page
                       transaction     answered ── expire: nobody took ─▶ expired ─ refunded, note page
                                         │          a page within TTL
                                         │ its last page went out
                                         ▼
                                     delivered
    recorded: not a question (event, media, command, 继续); refused: trial used up. Both final at
    admission; their immediate reply is a notice page. (reverted: rows of an earlier version.)

One answer at a time per user: a try starts only when no earlier question of the same user is
queued or answering, so a user's answers arrive in the order asked. A question that finds one
waits in `queued`, `behind` naming it; that one's end (answered, or given up) queues it again.

What the user reads is in `pages`, each its own little lifecycle::

    ready ──claim for a passive reply──▶ sent (via reply, with the message and post that carried it)
      │ ▲                                  │ a re-post of that message: its reply never arrived,
      │ └──── unclaim: the reply was late ─┘ so the page is served again (to the later post)
      ├──claim for a push──▶ pushing ──sent──▶ sent (via push)
      │                        └── refused or failed: back to ready (a crash: the reconciler does it)
      └──▶ cancelled (the question failed or expired, or an old notice nobody fetched)

A question ends delivered (each answer page sent once) or failed/expired (refunded once, and the
apology or note a page that goes out once): never both, never neither. Redis only carries the jobs
and wake-ups; the reconciler (`workers/reconcile.py`) finds deliveries whose `due_at` has passed and
finishes what a crash or a lost job left. How long it leaves a delivery alone before looking again
(whether its job is still queued, whether a failed push goes now) is `Settings.recheck_s`.
"""

from __future__ import annotations

QUEUED = "queued"
ANSWERING = "answering"
ANSWERED = "answered"
DELIVERED = "delivered"
FAILED = "failed"
EXPIRED = "expired"
RECORDED = "recorded"
REFUSED = "refused"
REVERTED = "reverted"

IN_FLIGHT = (QUEUED, ANSWERING)
"""A question not answered yet."""
OPEN = (QUEUED, ANSWERING, ANSWERED)
"""A question whose answer has not reached the user yet."""
FINAL = (DELIVERED, FAILED, EXPIRED, RECORDED, REFUSED, REVERTED)

MOVES = {
    QUEUED: (ANSWERING, FAILED),
    ANSWERING: (ANSWERED, QUEUED, ANSWERING, FAILED),
    ANSWERED: (DELIVERED, EXPIRED, FAILED),
    DELIVERED: (ANSWERED,),  # only when the passive reply that carried its last page was withdrawn
}
"""Every allowed move; `ANSWERING → ANSWERING` is a new try taking over an expired lease."""

READY, PUSHING, SENT, CANCELLED = "ready", "pushing", "sent", "cancelled"
ANSWER, NOTICE = "answer", "notice"
"""Page kinds: a page of the LLM's answer, or a notice (an immediate reply, an apology, a note)."""

LEASE_MARGIN_S = 15
"""A try's lease is the job timeout plus this: past it, the try is presumed dead (RQ ends a try at
its job timeout from inside the job's own greenlet, so only a worker that died leaves one behind)."""
PUSH_LEASE_S = 60
"""A page left `pushing` this long belongs to a sender that died; it becomes ready again."""


def can_move(old: str, new: str) -> bool:
    """True if the lifecycle allows `old → new`."""
    return new in MOVES.get(old, ())
