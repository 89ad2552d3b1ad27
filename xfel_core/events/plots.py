"""PNG preview of the event assets for the web UI (matplotlib, non-GUI backend)."""

from __future__ import annotations

import numpy as np

from ..plots import png as _png
from ..plots import subplots


def profile_png(radial: np.ndarray, profile: np.ndarray, unit: str, title: str) -> bytes:
    """The mean radial profile of the kept shots."""
    fig, ax = subplots(figsize=(6, 3))
    ax.plot(radial, profile, "-", lw=1)
    ax.set_xlabel(unit)
    ax.set_ylabel("intensity (ADU per unit solid angle)")
    ax.set_title(title, fontsize=9)
    return _png(fig)
