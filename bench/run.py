"""finetune-bot's performance figures, measured on this machine against `finetune-bot serve` and loopback stand-ins.

    python bench/run.py            # every figure, one `name: value` a line (about a minute)
    python bench/run.py --only deploy --small   # one scenario, at sizes that show it runs

1. ack latency under load: 300 signed slash commands from 20 concurrent senders, every provider call slowed 0.5 s;
2. poll cost: provider requests per poll cycle with 0, 10, 100 and 1,000 followed jobs still running, beside what
   one `retrieve` per job (the naive design) costs;
3. announcement latency: job final at the provider -> message posted, through polling and through webhooks;
4. memory: peak resident memory of the serve process tree with 1,000 followed jobs;
5. two providers: requests per poll cycle at each with 300 followed jobs split between OpenAI's shape and Together
   AI's, and the announcement latency of OpenAI jobs while Together AI answers every request with a 503; three
   providers (`providers3`): the same with 300 jobs over OpenAI's, Together AI's and Fireworks AI's shapes;
6. checking training data: `finetune-bot check` on 10 MB and 100 MB JSONL files: examples per second, MB per second,
   and the peak memory of the process (flat with file size: the file is read as a stream);
7. trying a model: the time `try` adds over the slower of the two models' own answers (both are asked at once);
8. cards: the Slack calls one long job costs its channel (card posts, card edits, thread replies) over two hours of
   training with a metrics step every 10 s, polled every 30 s, at each progress interval (and with none), beside
   Slack's limits: about one post a second per channel, chat.update in Tier 3 (about 50 a minute);
9. deployments (`deploy`): SQLite on one host, PostgreSQL with one replica and with three, at 300 and 10,000 followed
   jobs: the provider's list reads per poll cycle, announcement latency p50/max (30 succeeding at once), the acks' p99
   with 20 senders spread over the replicas while 200 outcomes drain over 50 channels, and that drain's rate;
10. spend and the watchdog (`estimate`, `watchdog`): estimating a start from a 100 MB file by its id (read through
   the provider's files API, streamed: time and peak memory, then again with its count remembered), and the
   watchdog's metric reads per poll cycle with 300 jobs training at the default intervals;
11. many workspaces (`workspaces`): 50 workspaces installed through OAuth, each with its own OpenAI key and 20
   followed jobs, on PostgreSQL with three replicas at a 5 s interval: list requests per poll cycle (and per key),
   that no request carries another workspace's key, and the announcement latency p50/max of 30 outcomes; and
   (`provider-build`) the CPU time to build one workspace's three providers from its keys, 200 times.

`BENCH_TRACE=1` with `--only announce-busy` also prints the slowest outcome's channel: every post there from three
seconds before the provider's change to that outcome, so a figure over its target says what it waited behind.

Each scenario is a module of `bench/scenarios/`; `SCENARIOS` below is the registry (the name `--only` takes, and
how the command line's sizes reach it); `bench/harness.py` is what they share.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import harness  # noqa: E402
from bench.harness import say  # noqa: E402
from bench.scenarios import (  # noqa: E402
    acks,
    announcing,
    data,
    deploying,
    memory,
    polling,
    standins,
    trying,
    watching,
    workspaces,
)


def _workspaces(workdir: str, args: argparse.Namespace) -> None:
    server = None
    url = args.database_url
    if url is None:
        from bench.postgres import ThrowawayPostgres

        server = ThrowawayPostgres().start()
        url = server.new_database()
    try:
        small = {"workspaces": 5, "per_workspace": 4, "interval": 1.0, "finishing": 5, "cycles": 2}
        sizes = small if args.small else {}
        workspaces.bench_workspaces(url, **sizes)
    finally:
        if server is not None:
            server.stop()


def _deploy(workdir: str, args: argparse.Namespace) -> None:
    sizes = {"commands": args.commands, "senders": args.senders}
    if args.small:
        sizes.update(channels=10, finishing=5, draining=20, cycles=3)
    deploying.bench_deployments(workdir, [60] if args.small else [int(n) for n in args.deploy_sizes.split(",")],
                                args.database_url, set(args.deploy_kinds.split(",")), **sizes)


# name -> how to run it with the command line's arguments, in the order a full run takes them
SCENARIOS = {
    "ack": lambda w, a: acks.bench_ack(w, a.commands, a.senders),
    "ack-load": lambda w, a: acks.bench_ack_under_load(
        w, a.commands, a.senders, **({"followed": 60, "channels": 5, "settle": 1.5} if a.small else {})),
    "poll": lambda w, a: polling.bench_poll_cost(w, [10, 100, 1000]),
    "announce": lambda w, a: announcing.bench_announce(w, 50),
    "memory": lambda w, a: memory.bench_memory(w, 1000),
    "memory-idle": lambda w, a: memory.bench_memory_idle(w, 50, settle=2.0) if a.small else memory.bench_memory_idle(
        w, 1000),
    "announce-busy": lambda w, a: announcing.bench_announce_busy(
        w, runs=a.runs, **({"followed": 12, "finishing": 4, "channels": 3} if a.small else {})),
    "providers": lambda w, a: polling.bench_two_providers(w, 300),
    "providers3": lambda w, a: polling.bench_three_providers(w, 300),
    "check": lambda w, a: data.bench_check(w),
    "try": lambda w, a: trying.bench_try(w),
    "estimate": lambda w, a: data.bench_estimate(w, 10 if a.small else 100),
    "move": lambda w, a: [data.bench_move(w, (2,) if a.small else (10, 100), target)
                          for target in ("together", "fireworks")],
    "watchdog": lambda w, a: watching.bench_watchdog(w, 30 if a.small else 300, 3 if a.small else 8),
    "cards": lambda w, a: watching.bench_cards(w, hours=a.card_hours),
    "deploy": _deploy,
    "workspaces": _workspaces,
    "provider-build": lambda w, a: workspaces.bench_provider_builds(20 if a.small else 200),
    "standins": lambda w, a: standins.bench_standin_requests(w, 50 if a.small else 200),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=list(SCENARIOS), action="append")
    parser.add_argument("--commands", type=int, default=300)
    parser.add_argument("--senders", type=int, default=20)
    parser.add_argument("--card-hours", type=float, default=2.0)
    parser.add_argument("--runs", type=int, default=1, help="repeat announce-busy this many times (figures pooled)")
    parser.add_argument("--small", action="store_true",
                        help="tiny sizes for announce-busy, memory-idle, ack-load and deploy: that they run, not their "
                             "figures")
    parser.add_argument("--senders-apart", action="store_true",
                        help="send the ack benches' commands from a process of their own")
    parser.add_argument("--database-url", help="deploy: this PostgreSQL database (emptied first) rather than a "
                        "throwaway server")
    parser.add_argument("--deploy-sizes", default="300,10000", help="deploy: followed jobs, comma-separated")
    parser.add_argument("--deploy-kinds", default="sqlite,postgresql_1,postgresql_3",
                        help="deploy: which deployments, comma-separated")
    args = parser.parse_args()
    harness.SENDERS_APART = args.senders_apart
    chosen = set(args.only or SCENARIOS)
    say("machine_cores", os.cpu_count())
    with tempfile.TemporaryDirectory(prefix="finetune-bot-bench-") as workdir:
        for name, run in SCENARIOS.items():
            if name in chosen:
                run(workdir, args)


if __name__ == "__main__":
    main()
