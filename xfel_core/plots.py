"""Figures rendered to PNG for the web UI's metadata, shared by every workflow.

matplotlib Figure objects rendered to PNG by its Agg canvas, without pyplot: no global backend is
chosen, so a notebook or a Qt window importing this keeps its own. Figures are small (tens of kB).
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DPI = 80


def subplots(*args, figsize: tuple[float, float], **kwargs):
    """A figure and its axes, as pyplot.subplots but not registered with pyplot."""
    from matplotlib.figure import Figure  # imported when a figure is made: 1 s off every process that makes none

    fig = Figure(figsize=figsize)
    return fig, fig.subplots(*args, **kwargs)


def png(fig: Figure) -> bytes:
    """The figure as PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    return buf.getvalue()
