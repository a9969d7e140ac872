"""The splitter that keeps a reasoning model's thinking out of its answer (workers/thinking.py), fed
the way streams come: split at every position, char by char, with tags in any case."""

from __future__ import annotations

import itertools
import time

import pytest

from workers.thinking import ThinkingSplitter

CASES = [
    ("<think>plan it</think>\n\nHello.", "Hello.", "plan it"),
    ("<THINK>plan</Think>  Hi <b>there</b>", "Hi <b>there</b>", "plan"),
    ("\n <think>\nplan\n</think>\nHello", "Hello", "\nplan\n"),
    ("<think>a</think>one <think>b</think>two", "one two", "ab"),
    ("<think></think>empty thought", "empty thought", ""),
    ("<think>forever thinking", "", "forever thinking"),
    ("<think>a < b, </thin></think>ok", "ok", "a < b, </thin>"),
    ("no tags: a<b, 1 </ 2, <thin ice>, </thinking", "no tags: a<b, 1 </ 2, <thin ice>, </thinking", ""),
    ("ends with <thi", "ends with <thi", ""),
    ("ends with </think", "ends with </think", ""),
    ("x<<think>y</think>>", "x<>", "y"),
    ("Wrap it in <THINK> tags.", "Wrap it in <THINK> tags.", ""),
    ("<think>p</think>a <think>b</think> c <think>d", "a c <think>d", "pb"),
]
UNOPENED = [
    ("plan it</think>\n\nHello.", "Hello.", "plan it"),
    ("plan</THINK>Hi <think>more</think> and done", "Hi and done", "planmore"),
]


def feed(chunks, **kw):
    """Feed `chunks` as content; check each answer so far; return the splitter and the answers seen."""
    s = ThinkingSplitter(**kw)
    seen = []
    for chunk in chunks:
        s.content(chunk)
        seen.append(s.answer)
    return s, seen


def splits(text: str):
    """`text` in one piece, in two at every position, in three at every pair of positions, char by char."""
    yield [text]
    for i in range(1, len(text)):
        yield [text[:i], text[i:]]
    for i, j in itertools.combinations(range(1, len(text)), 2):
        yield [text[:i], text[i:j], text[j:]]
    yield list(text)


@pytest.mark.parametrize("text,answer,thinking", CASES)
def test_every_split_gives_the_same_answer_and_the_answer_so_far_never_holds_thinking(text, answer, thinking):
    for chunks in splits(text):
        s, seen = feed(chunks)
        assert s.finish() == (answer, thinking), chunks
        for so_far in seen:
            assert answer.startswith(so_far), (chunks, so_far)  # no thinking, no piece of a tag held
        assert not s.unopened and not s.retracted


@pytest.mark.parametrize("text,answer,thinking", UNOPENED)
def test_an_unopened_block_makes_everything_before_it_thinking(text, answer, thinking):
    for chunks in splits(text):
        s, _ = feed(chunks)
        assert s.finish() == (answer, thinking), chunks
        assert s.unopened and s.retracted
        s, seen = feed(chunks, unopened=True)  # a model known to stream such blocks: nothing taken back
        assert s.finish() == (answer, thinking), chunks
        assert all(answer.startswith(so_far) for so_far in seen) and not s.retracted


def test_a_splitter_expecting_an_unopened_block_that_never_comes_gives_it_all_as_the_answer():
    s, seen = feed(["no thinking ", "this time <"], unopened=True)
    assert seen == ["", ""] and s.thinking == "no thinking this time "  # held back meanwhile
    assert s.finish() == ("no thinking this time <", "")
    s, _ = feed(["<think>opened", " and never closed"], unopened=True)
    assert s.finish() == ("", "opened and never closed")


def test_reasoning_deltas_are_thinking_and_content_the_answer():
    s = ThinkingSplitter()
    assert s.reasoning("Let me ") and s.reasoning("see.")
    assert not s.reasoning("") and not s.content("")
    assert (s.answer, s.thinking) == ("", "Let me see.")
    assert s.content("\n\nThe answer") and s.content(" is 4.")
    assert s.finish() == ("The answer is 4.", "Let me see.")


def test_a_splitter_expecting_an_unopened_block_streams_the_answer_of_a_model_thinking_in_the_field():
    s = ThinkingSplitter(unopened=True)
    s.reasoning("in the field")
    s.content("the answer")
    assert (s.answer, s.thinking) == ("the answer", "in the field")


def test_content_with_no_tags_passes_through_unchanged():
    text = "北京是中国的首都。\n\n- a < b\n- c > d\n"
    s, seen = feed(text[i:i + 3] for i in range(0, len(text), 3))
    assert s.finish() == (text, "")
    assert seen[-1] == text


def test_feeding_is_linear_in_the_stream():
    """Every delta costs its own length: a million characters of deltas, many with a `<` that holds
    back a fragment, take well under a second (a per-delta cost in the answer's length: minutes)."""
    s = ThinkingSplitter()
    chunks = ["a<b <t", "hin some text ", "more text <", "/th ", "plain " * 3] * 10_000
    started = time.monotonic()
    for chunk in chunks:
        s.content(chunk)
    elapsed = time.monotonic() - started
    answer, thinking = s.finish()
    assert thinking == "" and len(answer) == sum(map(len, chunks))
    assert elapsed < 5, elapsed
