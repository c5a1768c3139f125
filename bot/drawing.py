"""What the drawing process runs (bot.charting starts it): this module imports nothing of the bot's, so that process
loads only matplotlib and the chart code, not the Slack, provider and scheduler libraries."""

from __future__ import annotations

from collections.abc import Sequence

from bot.providers.types import MetricPoint


def loss_png(points: Sequence[MetricPoint], title: str) -> bytes | None:
    from bot.charts import loss_chart

    return loss_chart(points, title=title)
