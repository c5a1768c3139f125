"""A job's training loss as a picture: a PNG drawn with matplotlib (Agg, no screen), readable at Slack's preview
size."""

from __future__ import annotations

import io
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # files only: no display, no GUI toolkit

from matplotlib.figure import Figure  # noqa: E402 - after choosing the backend

from bot.providers.types import MetricPoint  # noqa: E402

WIDTH_PX, HEIGHT_PX, DPI = 1000, 560, 100


def loss_chart(points: Sequence[MetricPoint], *, title: str) -> bytes | None:
    """The training loss (and the validation loss, where there is one) by step, as PNG bytes; None with no data."""
    train = [(p.step, p.train_loss) for p in points if p.train_loss is not None]
    valid = [(p.step, p.valid_loss) for p in points if p.valid_loss is not None]
    if not train and not valid:
        return None
    # A Figure of its own, not pyplot: thread-safe, and nothing global is left behind.
    figure = Figure(figsize=(WIDTH_PX / DPI, HEIGHT_PX / DPI), dpi=DPI)
    axes = figure.add_subplot()
    if train:
        axes.plot(*zip(*train, strict=True), label="training loss", color="#2b6cb0", linewidth=1.8)
    if valid:
        axes.plot(*zip(*valid, strict=True), label="validation loss", color="#dd6b20", linewidth=1.8,
                  marker="o" if len(valid) <= 30 else None, markersize=4)
    axes.set_title(title[:120], fontsize=14)
    axes.set_xlabel("step", fontsize=12)
    axes.set_ylabel("loss", fontsize=12)
    axes.grid(True, alpha=0.3)
    for side in ("top", "right"):
        axes.spines[side].set_visible(False)
    if train and valid:
        axes.legend(frameon=False, fontsize=11)
    figure.tight_layout()
    out = io.BytesIO()
    figure.savefig(out, format="png", dpi=DPI)
    figure.clear()  # breaks the figure's reference cycles at once: 300 charts in a row stay within ~6 MB
    return out.getvalue()
