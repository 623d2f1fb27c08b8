"""A prefix tree over item-title token sequences: the constraint of language-space decoding.

BIGRec / D3-style generative recommenders let an LLM write the next item's
title, but only along token paths that spell a catalogue title (L2D, arXiv
2509.11524, Sec. 3's language-space baseline). This trie gives the decoder the
tokens allowed after any prefix and maps a finished path back to the titles
that share it.
"""

from __future__ import annotations

import operator

import numpy as np


class TitleTrie:
    """Prefix tree of title token sequences, each closed by the end-of-sequence token.

    Every input sequence is stored as `sequence + [eos_id]`, so a path from the
    root ends at a leaf exactly when it spells a whole title followed by eos;
    a title that is a prefix of another one ("Heat" and "Heat (1995)") keeps
    both: eos is simply one more allowed token after the shorter one. Titles
    with identical token sequences share one leaf, which lists all their input
    indices: a decoder cannot tell them apart, so the caller must decide how
    to score a leaf that stands for several items.

    Nodes are integers, the root is 0. Children are held twice: a dict per
    node for single look-ups (`child`) and a CSR layout (`edge_offsets`,
    `edge_tokens`, `edge_children`, tokens sorted within a node) that lets a
    decoder expand thousands of beams with array indexing instead of a Python
    loop. ~4k titles of ~15 tokens make ~60k nodes. `longest_remaining[node]`
    is the most tokens from a node to a leaf, eos included (0 at a leaf): a
    length-normalised beam search bounds its unfinished hypotheses with it.

    Args:
        sequences: one list of token ids per title, without eos; the input
            index of a sequence is what `titles_at` returns.
        eos_id: the end-of-sequence token id the decoding model emits.

    Raises:
        ValueError: no sequences; an empty sequence; a sequence holding
            `eos_id`; a token id that is negative or not an integer. The
            message names the offending sequence index.

    Example:
    >>> trie = TitleTrie([[5, 7], [5], [5, 7]], eos_id=2)
    >>> trie.allowed(trie.child(trie.root, 5)).tolist()
    [2, 7]
    >>> leaf = trie.child(trie.child(trie.child(trie.root, 5), 7), 2)
    >>> trie.titles_at(leaf)
    (0, 2)
    >>> trie.contains([5, 2]), trie.contains([5, 7])
    (True, False)
    """

    def __init__(self, sequences: list[list[int]], eos_id: int) -> None:
        self.eos_id = _token_id(eos_id, "eos_id")
        if len(sequences) == 0:
            raise ValueError("TitleTrie needs at least one title sequence; got none.")
        children: list[dict[int, int]] = [{}]
        parents = [-1]
        tokens_in = [-1]  # the token on the edge into each node; -1 for the root
        titles: dict[int, list[int]] = {}
        depth = 0
        for index, sequence in enumerate(sequences):
            sequence = [_token_id(token, f"sequence {index}") for token in sequence]
            if not sequence:
                raise ValueError(
                    f"Title sequence {index} is empty; every title needs at least one "
                    "token before eos (drop or re-tokenise that title)."
                )
            if self.eos_id in sequence:
                raise ValueError(
                    f"Title sequence {index} contains eos_id {self.eos_id} at position "
                    f"{sequence.index(self.eos_id)}; pass titles without eos (the trie "
                    "appends it), and make sure eos_id is the model's end-of-sequence id."
                )
            node = 0
            for token in [*sequence, self.eos_id]:
                nxt = children[node].get(token)
                if nxt is None:
                    nxt = len(children)
                    children[node][token] = nxt
                    children.append({})
                    parents.append(node)
                    tokens_in.append(token)
                node = nxt
            titles.setdefault(node, []).append(index)
            depth = max(depth, len(sequence) + 1)

        self._children = children
        self._parents = np.asarray(parents, dtype=np.int64)
        self._tokens_in = np.asarray(tokens_in, dtype=np.int64)
        self._titles = {leaf: tuple(indices) for leaf, indices in titles.items()}
        self._sequence_count = len(sequences)
        self._depth = depth

        counts = np.fromiter((len(c) for c in children), dtype=np.int64, count=len(children))
        offsets = np.zeros(len(children) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        edge_tokens = np.empty(offsets[-1], dtype=np.int64)
        edge_children = np.empty(offsets[-1], dtype=np.int64)
        for node, node_children in enumerate(children):
            start = offsets[node]
            for k, token in enumerate(sorted(node_children)):
                edge_tokens[start + k] = token
                edge_children[start + k] = node_children[token]
        is_leaf = np.zeros(len(children), dtype=bool)
        is_leaf[list(self._titles)] = True
        longest_remaining = np.zeros(len(children), dtype=np.int64)
        # A child's id is always above its parent's, so one pass from the
        # last node back settles every subtree before its parent reads it.
        for node in range(len(children) - 1, 0, -1):
            parent = parents[node]
            longest_remaining[parent] = max(longest_remaining[parent], longest_remaining[node] + 1)
        # Read-only: the decoder indexes these directly, and a stray write would
        # silently corrupt every later decode.
        for array in (offsets, edge_tokens, edge_children, is_leaf, longest_remaining):
            array.flags.writeable = False
        self.edge_offsets = offsets
        self.edge_tokens = edge_tokens
        self.edge_children = edge_children
        self.leaf_mask = is_leaf
        self.longest_remaining = longest_remaining

    @property
    def root(self) -> int:
        """The root node id, 0: the empty prefix."""
        return 0

    @property
    def sequence_count(self) -> int:
        """How many sequences were given, duplicates included."""
        return self._sequence_count

    @property
    def depth(self) -> int:
        """The most tokens any title needs, eos included: longest sequence + 1."""
        return self._depth

    def __len__(self) -> int:
        """The number of nodes, root and leaves included."""
        return len(self._children)

    def allowed(self, node: int) -> np.ndarray:
        """The token ids that may follow `node`'s prefix, sorted ascending (int64).

        Empty for a leaf (nothing follows eos).

        Raises:
            ValueError: `node` is not a node of this trie.
        """
        node = self._check_node(node)
        return self.edge_tokens[self.edge_offsets[node] : self.edge_offsets[node + 1]]

    def child(self, node: int, token: int) -> int:
        """The node reached from `node` by `token`.

        Raises:
            ValueError: `node` is not a node of this trie, or `token` is not
                allowed after it (see `allowed`).
        """
        node = self._check_node(node)
        nxt = self._children[node].get(int(token))
        if nxt is None:
            raise ValueError(
                f"Token {token} does not continue any title after node {node} (prefix "
                f"{self.tokens_at(node)}); allowed tokens: {self.allowed(node).tolist()}."
            )
        return nxt

    def is_leaf(self, node: int) -> bool:
        """Whether `node` ends a whole title (its last token is eos)."""
        return bool(self.leaf_mask[self._check_node(node)])

    def titles_at(self, node: int) -> tuple[int, ...]:
        """Input indices of the sequences whose `sequence + [eos]` ends at `node`.

        Several indices when titles tokenise identically; `()` for an inner node.
        """
        return self._titles.get(self._check_node(node), ())

    def leaves(self) -> np.ndarray:
        """All leaf node ids, ascending (int64): one per distinct title sequence."""
        return np.flatnonzero(self.leaf_mask)

    def tokens_at(self, node: int) -> list[int]:
        """The token path from the root to `node` (for a leaf: the title then eos)."""
        node = self._check_node(node)
        path = []
        while node != 0:
            path.append(int(self._tokens_in[node]))
            node = int(self._parents[node])
        return path[::-1]

    def contains(self, tokens: list[int] | np.ndarray) -> bool:
        """Whether `tokens` is a whole title followed by eos, with nothing after it."""
        node = 0
        for token in tokens:
            node = self._children[node].get(int(token))
            if node is None:
                return False
        return bool(self.leaf_mask[node])

    def _check_node(self, node: int) -> int:
        node = operator.index(node)
        if not 0 <= node < len(self._children):
            raise ValueError(
                f"Node {node} is not in this trie; node ids run from 0 to "
                f"{len(self._children) - 1}."
            )
        return node


def _token_id(token, where: str) -> int:
    """`token` as a non-negative int; ValueError naming `where` otherwise."""
    if isinstance(token, (bool, np.bool_)):
        raise ValueError(f"Token ids must be integers; {where} has the boolean {token!r}.")
    try:
        value = operator.index(token)
    except TypeError:
        raise ValueError(
            f"Token ids must be integers; {where} has {token!r} ({type(token).__name__})."
        ) from None
    if value < 0:
        raise ValueError(f"Token ids must be non-negative; {where} has {value}.")
    return value
