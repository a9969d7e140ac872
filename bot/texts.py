"""User-facing texts that are not settings (the configurable ones live in config/settings.py)."""

APOLOGY = "Sorry, I could not answer that just now. Your free answer was not used; please ask again."
"""Sent when the last try of an answer fails; the reserved trial answer has been refunded."""

APOLOGY_MEMBER = "Sorry, I could not answer that just now; please ask again."
"""The same, for members (nothing was charged)."""

TEXT_ONLY = "I can only read text messages for now; please type your question."
"""Reply to images, video, files and other media; not charged."""

TRUNCATED = "\n…(answer cut short: it was longer than WeChat allows)"
"""Appended to the last part of an answer that did not fit into the platform's message budget."""

DEMO_PREFIX = "[demo: no LLM is configured, set OPENAI_API_KEY] "
"""Every answer of the offline demo responder starts with this, so nobody mistakes it for a model."""
