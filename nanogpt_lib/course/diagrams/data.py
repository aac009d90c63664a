"""Chapter 01's diagram: the data pipeline, text to documents to a split to token ids to .bin files to
batches, labelled with the real counts of a prepared dataset and the shapes of a real batch."""

from __future__ import annotations

from typing import Any

import torch
from matplotlib.figure import Figure

from ._draw import arrow, blank, box


def pipeline_figure(meta: dict[str, Any], x: torch.Tensor, y: torch.Tensor, n_chars: int) -> Figure:
    """The six stages of ``prepare()`` and ``TokenData``, each box carrying its numbers.

    ``meta`` is the dataset's meta.json (its splits' docs, tokens and bytes, the tokenizer, the request's seed),
    ``x``/``y`` one batch from ``TokenData.get_batch``, ``n_chars`` the characters of the raw text. Nothing is
    typed in: a different corpus, split or batch gives a different picture.
    """
    train, val = meta["splits"]["train"], meta["splits"]["val"]
    n_docs = train["docs"] + val["docs"]
    request = meta.get("request", {})
    B, T = x.shape
    stages = [
        ("text", f"{n_docs} files\n{n_chars:,} characters"),
        ("documents", f"{n_docs} documents\neach + <|endoftext|>\n(id {meta['eot_id']})"),
        (
            "split",
            f"by whole document\ntrain {train['docs']} / val {val['docs']}\n"
            f"seed {request.get('seed', '?')}, 1 in {request.get('val_every', '?')}",
        ),
        (
            "token ids",
            f"{meta['tokenizer']} BPE\n{meta['vocab_size']:,} ids\ntrain {train['tokens']:,}\nval {val['tokens']:,}",
        ),
        (".bin files", f"{meta['dtype']}, 2 bytes/id\ntrain.bin {train['bytes']:,} B\nval.bin {val['bytes']:,} B"),
        ("batch", f"x {tuple(x.shape)}\ny {tuple(y.shape)}\nB={B} windows of T={T}\ny = x moved 1 along"),
    ]
    w, h, gap = 1.55, 1.35, 0.35
    fig, ax = blank(len(stages) * (w + gap), h + 0.6)
    for i, (title, body) in enumerate(stages):
        x0 = i * (w + gap) + 0.1
        box(ax, x0, 0.2, w, h, title, body, colour="#fef3c7" if i < 3 else "#e0ecff")
        if i:
            arrow(ax, (x0 - gap + 0.02, 0.2 + h / 2), (x0 - 0.02, 0.2 + h / 2))
    ax.set_title("prepare() writes the files (left), TokenData cuts batches from them (right)", fontsize=10)
    return fig
