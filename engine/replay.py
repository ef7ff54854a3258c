"""
Splitting a whole answer into content deltas for a streaming client (contract §3, §5 "Replay").

Rules:

1. The pieces concatenate to the text exactly: ``"".join(split_for_replay(t, n)) == t``.
2. A piece ends only where whitespace meets a word (or at the end of the text), so whitespace
   stays attached to the word before it, and a word is never cut.
3. In other words the text is a run of tokens, each a word with the whitespace after it (plus,
   when the text starts with whitespace, that whitespace as a token of its own), and pieces pack
   whole tokens greedily: each piece is as long as possible within ``max_chars`` characters.
4. A token longer than ``max_chars`` (a long word, or a word followed by a long run of
   whitespace) is one piece of its own, the only piece longer than ``max_chars``.
5. An empty text gives no pieces.

"Whitespace" is what ``\\s`` matches in a ``str`` pattern (Unicode whitespace). The work is done
by one compiled pattern per ``max_chars`` (C code, no Python loop over words or characters).
"""

from __future__ import annotations

import functools
import re

__all__ = ["split_for_replay"]


@functools.lru_cache(maxsize=16)
def _piece_pattern(max_chars: int) -> re.Pattern[str]:
    # Alternatives, tried in order at the start of each piece:
    #   the longest text of at most max_chars that ends in whitespace followed by a word;
    #   the rest of the text when it fits;
    #   one token that does not fit (a word and the whitespace after it);
    #   leading whitespace of the text that does not fit.
    return re.compile(
        rf"(?s).{{0,{max_chars - 1}}}\s(?=\S)|.{{1,{max_chars}}}\Z|\S+\s*|\s+",
    )


def split_for_replay(text: str, max_chars: int) -> list[str]:
    """
    Split *text* at whitespace into deltas of at most *max_chars* characters.

    Raises:
        ValueError: *max_chars* is less than 1.
    """
    if max_chars < 1:
        raise ValueError("max_chars must be at least 1")
    if len(text) <= max_chars:
        return [text] if text else []
    pieces: list[str] = _piece_pattern(max_chars).findall(text)
    # The first alternative stops at the last word boundary even when the whole rest would fit;
    # only the last two pieces can be affected, and joining them restores the longest piece.
    if len(pieces) > 1 and len(pieces[-2]) + len(pieces[-1]) <= max_chars:
        pieces[-2:] = [pieces[-2] + pieces[-1]]
    return pieces
