"""Splitting a whole answer into replay deltas (engine.replay)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.replay import split_for_replay

TOKEN = re.compile(r"^\s+|\S+\s*")


def reference_split(text: str, max_chars: int) -> list[str]:
    """The rule spelled out: pack whole tokens (a word and the whitespace after it) greedily."""
    pieces: list[str] = []
    current = ""
    for token in TOKEN.findall(text):
        if current and len(current) + len(token) > max_chars:
            pieces.append(current)
            current = ""
        current += token
    if current:
        pieces.append(current)
    return pieces


def test_split_for_replay_empty_text_gives_no_pieces() -> None:
    assert split_for_replay("", 24) == []


def test_split_for_replay_short_text_is_one_piece() -> None:
    assert split_for_replay("Hello there!", 24) == ["Hello there!"]


def test_split_for_replay_keeps_whitespace_after_each_word() -> None:
    text = "The quick brown fox jumps over the lazy dog."
    assert split_for_replay(text, 12) == [
        "The quick ",
        "brown fox ",
        "jumps over ",
        "the lazy ",
        "dog.",
    ]


def test_split_for_replay_piece_may_fill_max_chars_exactly() -> None:
    assert split_for_replay("abcd efgh ijkl", 5) == ["abcd ", "efgh ", "ijkl"]


def test_split_for_replay_long_word_is_a_piece_of_its_own() -> None:
    text = "see https://example.com/a/very/long/path/indeed ok"
    assert split_for_replay(text, 10) == [
        "see ",
        "https://example.com/a/very/long/path/indeed ",
        "ok",
    ]


def test_split_for_replay_newlines_and_tabs_are_whitespace() -> None:
    text = "line one\n\nline two\tcol\n"
    assert split_for_replay(text, 10) == ["line one\n\n", "line two\t", "col\n"]


def test_split_for_replay_leading_whitespace_that_does_not_fit_is_its_own_piece() -> None:
    assert split_for_replay(" " * 6 + "word", 5) == [" " * 6, "word"]


def test_split_for_replay_whitespace_only_text_longer_than_max_is_one_piece() -> None:
    assert split_for_replay(" \n" * 10, 4) == [" \n" * 10]


def test_split_for_replay_last_words_join_the_longest_piece() -> None:
    """The end of the text is packed like the rest: no short last piece when it fits."""
    assert split_for_replay("aaaa b c", 5) == ["aaaa ", "b c"]


def test_split_for_replay_max_chars_one_splits_every_word() -> None:
    assert split_for_replay("a b cd", 1) == ["a ", "b ", "cd"]


@pytest.mark.parametrize("max_chars", [0, -3])
def test_split_for_replay_max_chars_below_one_raises(max_chars: int) -> None:
    with pytest.raises(ValueError):
        split_for_replay("text", max_chars)


def test_split_for_replay_200_word_answer_respects_default_limit() -> None:
    words = ["gateway", "streams", "an", "answer", "to", "every", "client,", "quickly."]
    text = " ".join(words[i % len(words)] for i in range(200))
    pieces = split_for_replay(text, 24)
    assert ("".join(pieces), max(map(len, pieces)) <= 24) == (text, True)


WORDY = st.text(alphabet=st.sampled_from("ab \n\t\u00a0\u2003é"), max_size=80)


@given(text=st.one_of(WORDY, st.text(max_size=80)), max_chars=st.integers(1, 30))
def test_split_for_replay_pieces_concatenate_to_the_text(text: str, max_chars: int) -> None:
    assert "".join(split_for_replay(text, max_chars)) == text


@given(text=st.one_of(WORDY, st.text(max_size=80)), max_chars=st.integers(1, 30))
def test_split_for_replay_only_single_tokens_exceed_max_chars(text: str, max_chars: int) -> None:
    too_long = [p for p in split_for_replay(text, max_chars) if len(p) > max_chars]
    single_tokens = [p for p in too_long if len(TOKEN.findall(p)) == 1]
    assert too_long == single_tokens


@given(text=st.one_of(WORDY, st.text(max_size=80)), max_chars=st.integers(1, 30))
def test_split_for_replay_packs_tokens_greedily(text: str, max_chars: int) -> None:
    assert split_for_replay(text, max_chars) == reference_split(text, max_chars)
