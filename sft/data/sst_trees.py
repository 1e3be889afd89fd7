"""The Stanford Sentiment Treebank's PTB trees: parse one line, turn its leaves back into text.

A tree like `(3 (2 (2 The) (2 Rock)) (4 ...))` labels every node 0..4 (very negative .. very
positive); its leaves are PTB tokens (-LRB-, ``, n't). `sft.data.readers.sst_trees` reads
files of them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

_TREE_TOKEN = re.compile(r"\(|\)|[^\s()]+")
# PTB escapes in the SST trees; `` and '' are the tokenised double quotes.
_PTB_ESCAPES = {
    "-LRB-": "(",
    "-RRB-": ")",
    "-LSB-": "[",
    "-RSB-": "]",
    "-LCB-": "{",
    "-RCB-": "}",
    "``": '"',
    "''": '"',
    "`": "'",
}
# Tokens glued to the previous / the next word when the tree's words are joined (after
# unescaping; the quotes by their PTB form, which tells opening from closing).
_NO_SPACE_BEFORE = {".", ",", ";", ":", "!", "?", "%", "...", ")", "]", "}", "''", "n't", "'"}
_NO_SPACE_AFTER = {"(", "[", "{", "``", "`", "$", "#"}


def detokenize(words: Sequence[str]) -> str:
    """PTB tokens -> plain text: unescape brackets, quotes, `\\/` and `\\*`; glue punctuation
    and clitics (`it 's` -> `it's`) the way the raw sentence was written, since pretrained
    tokenizers saw raw text (for WordPiece the result barely differs; for BPE it does)."""
    out: list[str] = []
    glue_next = False
    for word in words:
        text = _PTB_ESCAPES.get(word, word).replace("\\/", "/").replace("\\*", "*")
        form = word if word in ("``", "''", "`") else text
        glue = glue_next or form in _NO_SPACE_BEFORE or word.startswith("'")
        if out and not glue:
            out.append(" ")
        out.append(text)
        glue_next = form in _NO_SPACE_AFTER
    return "".join(out)


@dataclass
class Tree:
    """Leaves and every node as (label, first leaf, end leaf); the root is the last node."""

    words: list[str]
    nodes: list[tuple[int, int, int]]


def parse_tree(text: str) -> Tree:
    """One PTB tree like `(3 (2 (2 The) (2 Rock)) (4 ...))`; ValueError when malformed."""
    words: list[str] = []
    nodes: list[tuple[int, int, int]] = []
    open_nodes: list[tuple[int, int]] = []
    expect_label = closed = False
    for tok in _TREE_TOKEN.findall(text):
        if closed:
            raise ValueError(f"text after the end of the tree: {tok!r}")
        if tok == "(":
            if expect_label:
                raise ValueError("'(' where a label was expected")
            expect_label = True
        elif tok == ")":
            if expect_label or not open_nodes:
                raise ValueError("unbalanced ')'")
            label, start = open_nodes.pop()
            if start == len(words):
                raise ValueError("a node without words")
            nodes.append((label, start, len(words)))
            closed = not open_nodes
        elif expect_label:
            if not tok.isdigit():
                raise ValueError(f"expected a sentiment label 0..4, got {tok!r}")
            open_nodes.append((int(tok), len(words)))
            expect_label = False
        elif not open_nodes:
            raise ValueError(f"word {tok!r} outside the tree")
        else:
            words.append(tok)
    if not closed:
        raise ValueError("unbalanced '(' or no tree")
    return Tree(words, nodes)
