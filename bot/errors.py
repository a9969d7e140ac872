"""Named exceptions of chatgate's domain, all under one base.

    ChatgateError
    ├── UnknownUser        a user reference that matches nobody
    ├── DeliveryGone       a job for a delivery the store does not hold
    └── AnswerFailed       an answer could not be produced or sent
        ├── TransientFailure   worth another try (timeouts, 5xx, rate limits)
        └── PermanentFailure   trying again will not help (bad key, rejected request)
"""


class ChatgateError(Exception):
    """Base of every chatgate error."""


class UnknownUser(ChatgateError):
    """No user matches the given reference."""


class DeliveryGone(ChatgateError):
    """A job names a delivery that is not in the store."""


class AnswerFailed(ChatgateError):
    """An answer could not be produced or delivered."""


class TransientFailure(AnswerFailed):
    """A failure that another try may cure: timeouts, connection errors, 5xx, rate limits."""


class PermanentFailure(AnswerFailed):
    """A failure another try will not cure: authentication, a rejected request, a blocked user."""
