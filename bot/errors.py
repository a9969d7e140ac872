"""Named exceptions of chatgate's domain, all under one base.

    ChatgateError
    ├── UnknownUser        a user reference that matches nobody
    ├── DeliveryGone       a job for a delivery the store does not hold
    ├── CodeInvalid        a redemption code that is unknown, used or disabled (the user is not told which)
    ├── RedeemLimited      too many wrong codes lately; nothing was tried
    ├── BatchExists        a new batch of codes under a name already taken
    ├── MembershipTooLong  a grant or code that would take a membership past `bot.limits.MAX_EXPIRY`
    ├── OrderLookupFailed  a payment platform could not be asked about an order (network, an error answer)
    └── AnswerFailed       an answer could not be produced or sent
        ├── TransientFailure   worth another try (timeouts, 5xx, rate limits)
        └── PermanentFailure   trying again will not help (bad key, rejected request)

    GiveBack (a BaseException, not a ChatgateError: no `except Exception` takes it for a failure)
                           the worker is stopping: the question goes back to the queue, its try not spent
"""


class ChatgateError(Exception):
    """Base of every chatgate error."""


class UnknownUser(ChatgateError):
    """No user matches the given reference."""


class DeliveryGone(ChatgateError):
    """A job names a delivery that is not in the store."""


class CodeInvalid(ChatgateError):
    """The redemption code is unknown, already used, disabled or malformed."""


class RedeemLimited(ChatgateError):
    """The user sent too many wrong codes within the rate-limit window."""


class BatchExists(ChatgateError):
    """A batch of codes with that name already exists."""


class MembershipTooLong(ChatgateError):
    """A grant or a code would take the membership past the latest expiry chatgate keeps; nothing changed."""


class OrderLookupFailed(ChatgateError):
    """The payment platform did not say what an order is (unreachable, an error answer); ask again later."""


class AnswerFailed(ChatgateError):
    """An answer could not be produced or delivered."""


class TransientFailure(AnswerFailed):
    """A failure that another try may cure: timeouts, connection errors, 5xx, rate limits."""


class PermanentFailure(AnswerFailed):
    """A failure another try will not cure: authentication, a rejected request, a blocked user."""


class GiveBack(BaseException):
    """Raised into a job when its worker stops before the job is done (a cold stop, or a warm one while
    the job still waits to start its try): the try in hand, if any, is given back uncounted and the
    question is queued again at once for another worker."""
