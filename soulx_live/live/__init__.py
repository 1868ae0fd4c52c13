"""The parts of a live run, one job per file, composed by :class:`soulx_live.daemon.Daemon`:

- :mod:`.lifecycle` — the run's state machine (starting → running ⇄ restarting → draining → closing → stopped);
- :mod:`.threads` — named threads whose failures go to one policy;
- :mod:`.session` — what the threads of one session share: spec, epoch, timeline, end markers, counters;
- :mod:`.intake` — the audio source played into the intake ring;
- :mod:`.driver` — the :class:`~.driver.EngineDriver` protocol, with :mod:`.inprocess` (the engine in this
  process) and :mod:`.supervised` (a supervised worker process or torchrun group);
- :mod:`.fanout` — one thread per sink: bus subscriber, hold frames, barge-in drops;
- :mod:`.push_host` — the push API (bridge, server, speech events);
- :mod:`.metrics_hub` — the Prometheus metrics of the run.

May import: ``engine.interface``, ``plugins``, and the rest of ``soulx_live`` except :mod:`soulx_live.daemon`
and :mod:`soulx_live.cli`. Never torch: the daemon side stays free of CUDA.
"""
