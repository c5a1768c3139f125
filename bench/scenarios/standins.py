"""The loopback stand-ins themselves: how long one request through the real SDK takes (`standins`). Every test and
the shell's sandbox talk to them, so a stand-in that waits (Nagle's algorithm holding an answer's body until the
client's delayed ACK: about 40 ms a request on Linux) slows everything that uses them."""

from __future__ import annotations

import time

from bench.harness import percentile, say
from bot.sandbox.openai import FineTuningSandbox


def bench_standin_requests(workdir: str, requests: int = 200) -> None:
    import openai

    with FineTuningSandbox() as provider:
        client = openai.OpenAI(api_key="sk-bench", base_url=provider.url + "/v1", max_retries=0)
        job = provider.add_job(status="running")
        client.fine_tuning.jobs.retrieve(job["id"])  # (the connection made and the SDK's first use done)
        took = []
        for _ in range(requests):
            began = time.perf_counter()
            client.fine_tuning.jobs.retrieve(job["id"])
            took.append(time.perf_counter() - began)
    say("standin_requests", requests)
    say("standin_request_p50_ms", f"{percentile(took, 50) * 1000:.1f}")
    say("standin_request_p99_ms", f"{percentile(took, 99) * 1000:.1f}")
