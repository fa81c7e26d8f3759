"""``analyze bench``: replay whole captured workloads against an OpenAI-compatible server.

The parts, in the order the data flows:

- ``workload``: capture tables → sessions of turns (context, answer length, send time, think time);
- ``schedule``: when each turn is meant to be sent (open loop) or what it waits for (closed loop);
- ``loadgen``: the asyncio client that sends, and records the moment the request bytes were written
  and every chunk;
- ``metrics``: per-request and run-level statistics (pure);
- ``results``: the ``bench_runs`` / ``bench_requests`` rows and the printed summary.

Everything but ``loadgen`` and the CLI shell is free of I/O.
"""
