"""The model's thinking, kept apart from its answer as a chat stream comes in.

Reasoning models send their thinking in one of two shapes:
- a field of its own beside `content` (`choices[0].delta.reasoning_content`, DeepSeek's; `reasoning`,
  OpenRouter's): fed with `ThinkingSplitter.reasoning`;
- inline in `content`, as `<think>…</think>` before the answer (QwQ, the R1 distills), where some
  providers strip the opening tag and stream only the closing one (everything before it is
  thinking): fed with `ThinkingSplitter.content`.

The splitter is a small state machine over the content deltas. Each delta costs time in its own
length, not the answer's (the fast path is a delta with no `<` in it). A trailing fragment that
could be the start of a tag (`<`, `</thi`…) is held back until the next delta settles it, so the
answer so far never holds thinking nor a piece of a tag. Tags match in any case; whitespace after
a closing tag (and at the very start) is not part of the answer. Blocks may also come later, and
several of them; but a `<think>` that opens after the answer began and never closes was the answer's
own text (an answer about the tag): it is given back, tag and all, at the end.

One shape it cannot see coming: a stream whose opening `<think>` was stripped looks like an answer
until its `</think>` arrives; what was reported as answer until then is taken back (`retracted`). A
splitter made with `unopened=True` (the LLM client does so once its model has streamed such a block)
holds everything back as thinking until a `</think>`, or until the end (no tag: all of it is answer).
"""

from __future__ import annotations

import re

OPEN, CLOSE = "<think>", "</think>"

_ANY = re.compile(r"</?think>", re.IGNORECASE)
_OPEN = re.compile(r"<think>", re.IGNORECASE)
_CLOSE = re.compile(r"</think>", re.IGNORECASE)

FRESH, ANSWER, THINK = "fresh", "answer", "think"
"""Where the splitter is: before any tag (an unopened `</think>` may still come), in the answer after a
tag, inside a think block."""


def _held_back(text: str, tags: tuple[str, ...]) -> int:
    """How many characters at the end of `text` could begin one of `tags` (the longest such)."""
    for n in range(min(len(text), max(len(t) for t in tags) - 1), 0, -1):
        tail = text[-n:].lower()
        if any(t.startswith(tail) for t in tags):
            return n
    return 0


def _joined(parts: list[str]) -> str:
    """The parts as one string, kept as the only part (the next join starts from it)."""
    if len(parts) > 1:
        parts[:] = ["".join(parts)]
    return parts[0] if parts else ""


class ThinkingSplitter:
    """Splits one streamed answer into the answer and the model's thinking.

    Feed `content(delta)` and `reasoning(delta)` as they come (each returns True when the answer or the
    thinking grew); read `answer` and `thinking` at any time; call `finish()` at the end of the stream
    for the final pair."""

    def __init__(self, *, unopened: bool = False):
        self._answer: list[str] = []
        self._reasoning: list[str] = []
        self._inline: list[str] = []
        self._held = ""
        self._skip_space = True  # drop whitespace at the start of the answer and after a closing tag
        self._state = THINK if unopened else FRESH
        self._expecting = unopened  # thinking until a `</think>` that may never come
        self._opened = False  # this think block began with `<think>`
        self._late: tuple[str, int] | None = None  # a block opened after the answer began: (its tag, where)
        self.blocks = 0
        """Think blocks closed so far."""
        self.unopened = False
        """A `</think>` came with no `<think>` before it."""
        self.retracted = False
        """Answer text reported so far was taken back as thinking (an unopened `</think>` came late)."""

    @property
    def answer(self) -> str:
        """The answer so far: no thinking, no piece of a tag."""
        return _joined(self._answer)

    @property
    def answered(self) -> bool:
        """True once the answer has begun (cheap: nothing is joined)."""
        return bool(self._answer)

    @property
    def thinking(self) -> str:
        """The thinking so far, from the reasoning field and the think blocks."""
        if not self._inline or not self._reasoning:  # one shape only, as models stream: no concatenation
            return _joined(self._inline or self._reasoning)
        return _joined(self._reasoning) + _joined(self._inline)

    def reasoning(self, delta: str) -> bool:
        """Take a delta of the reasoning field (all thinking)."""
        if not delta:
            return False
        if self._expecting and not self._opened and not self._inline and not self._held:
            self._state, self._expecting = FRESH, False  # it thinks in the field: its content is answer
        self._reasoning.append(delta)
        return True

    def content(self, delta: str) -> bool:
        """Take a delta of `content`. True when the answer or the thinking grew."""
        if not delta:
            return False
        if not self._held and "<" not in delta:  # the common case: no tag can start here
            return self._emit(delta)
        text, self._held = self._held + delta, ""
        grew = False
        while True:
            pattern = _ANY if self._state == FRESH or self._expecting else _CLOSE if self._state == THINK else _OPEN
            m = pattern.search(text)
            if m is None:
                break
            grew = self._emit(text[:m.start()]) or grew
            self._tag(m.group())
            grew = True
            text = text[m.end():]
        keep = _held_back(text, (OPEN, CLOSE) if self._state == FRESH or self._expecting else
                          (CLOSE,) if self._state == THINK else (OPEN,))
        if keep:
            text, self._held = text[:-keep], text[-keep:]
        return self._emit(text) or grew

    def finish(self) -> tuple[str, str]:
        """The end of the stream: settle what was held back; returns (answer, thinking). An unclosed
        `<think>` before the answer makes the rest thinking; one after the answer began was text of
        the answer (it is given back, with the tag); a splitter still waiting for an unopened
        `</think>` that never came gives all it held as the answer."""
        held, self._held = self._held, ""
        self._emit(held)
        if self._state == THINK and self._expecting and not self._opened:
            text, self._inline = _joined(self._inline), []
            self._state, self._expecting = FRESH, False
            self._emit(text)
        elif self._state == THINK and self._late is not None:  # the answer spoke of a tag: give it back
            (tag, at), inline = self._late, _joined(self._inline)
            self._inline, self._state = [inline[:at]], ANSWER
            self._emit(tag + inline[at:])
        return self.answer, self.thinking

    def _emit(self, text: str) -> bool:
        if not text:
            return False
        if self._state == THINK:
            self._inline.append(text)
            return True
        if self._skip_space:
            text = text.lstrip()
            if not text:
                return False
            self._skip_space = False
        self._answer.append(text)
        return True

    def _tag(self, tag: str) -> None:
        if tag.lower() == OPEN:
            if self._answer and self._state != THINK:
                self._late = (tag, len(_joined(self._inline)))
            self._state, self._opened = THINK, True
            return
        if self._state == FRESH:  # an unopened block: all the answer so far was thinking
            self.unopened = True
            self.retracted = bool(self._answer)
            self._inline[:0] = self._answer
            self._answer = []
        self.blocks += 1
        self._state, self._skip_space, self._opened, self._expecting, self._late = ANSWER, True, False, False, None
