"""The drawing process (bot.charting starts it as `python -m bot.drawing FD` and talks to it over that socket): it
imports nothing of the bot's but the chart code, so it loads only matplotlib, not the Slack, provider and scheduler
libraries."""

from __future__ import annotations

import signal
import sys
from collections.abc import Sequence
from multiprocessing.connection import Connection

from bot.providers.types import MetricPoint


def loss_png(points: Sequence[MetricPoint], title: str) -> bytes | None:
    from bot.charts import loss_chart

    return loss_chart(points, title=title)


def serve(conn: Connection) -> None:
    """Draw each (points, title) that comes, answering ("ok", png or None) or ("error", why), until the bot closes
    its end of the pipe (or goes away)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C in a terminal is for the bot, which ends this process
    while True:
        try:
            points, title = conn.recv()
        except (EOFError, OSError):
            return
        try:
            answer = ("ok", loss_png(points, title))
        except Exception as error:  # noqa: BLE001 - said to the bot, which logs it; the next chart may well draw
            answer = ("error", f"{type(error).__name__}: {error}")
        try:
            conn.send(answer)
        except (EOFError, OSError):
            return


if __name__ == "__main__":
    serve(Connection(int(sys.argv[1])))
