"""`try`: the time it adds over the slower of the two models' own answers."""

from __future__ import annotations

import os
import time

from bench.harness import percentile, say
from bot.sandbox.openai import FineTuningSandbox
from storage import Store


def bench_try(workdir: str, tries: int = 20) -> None:
    from bot.config import Settings
    from bot.providers import registry
    from bot.trying import TryService

    with FineTuningSandbox() as provider:
        job = provider.add_job(status="succeeded")
        provider.chat_latency = {job["fine_tuned_model"]: 0.3, "gpt-4.1-mini-2025-04-14": 0.5}
        settings = Settings(env={"OPENAI_API_KEY": "sk-bench", "OPENAI_BASE_URL": provider.url + "/v1"},
                            database_path=os.path.join(workdir, "try.db"))
        store = Store(settings.database_path)
        providers = registry.configured(settings)
        store.follows.follow("C0BENCH", {"id": job["id"], "provider": "openai", "status": "succeeded",
                                         "model": job["model"], "fine_tuned_model": job["fine_tuned_model"]},
                             final=True, team_id="T", user_id="U0BENCH", origin="subscribe")
        trying = TryService(providers, store, None, None, max_tokens=256, max_prompt_chars=4000,
                            max_file_bytes=10**6)
        target = trying.resolve(job["fine_tuned_model"], None, None)
        added = []
        for _ in range(tries):
            started = time.perf_counter()
            tuned, base = trying.ask_both(target, [{"role": "user", "content": "What's the capital of France?"}])
            wall = time.perf_counter() - started
            assert tuned.error is None and base.error is None
            added.append(wall - max(tuned.seconds, base.seconds))
        store.close()
        say("try_tries", tries)
        say("try_model_latencies_s", "0.3 (fine-tuned) / 0.5 (base)")
        say("try_added_over_slower_model_p50_ms", f"{percentile(added, 50) * 1000:.1f}")
        say("try_added_over_slower_model_max_ms", f"{max(added) * 1000:.1f}")
        say("try_sequential_would_add_ms", "300")
