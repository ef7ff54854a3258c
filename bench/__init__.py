"""
The benchmark of issue 11: the gateway beside the direct upstream, a bare floor and LiteLLM.

Modules:

- :mod:`bench.fake_upstream`: a raw asyncio HTTP/1.1 upstream, fast enough never to be the
  bottleneck, that counts the calls it gets;
- :mod:`bench.loadgen`: a raw-socket HTTP/1.1 client that times and validates responses;
- :mod:`bench.floor_app`: the bare Quart + Hypercorn + httpx pass-through (the floor);
- :mod:`bench.engine_micro`: the CPU cost of one engine session, no IO;
- :mod:`bench.procs`: starting, pinning and measuring the processes under test;
- :mod:`bench.scenarios`: the fixed scenarios, one function each;
- :mod:`bench.run`: the orchestrator (``make bench``), writing ``bench/results/*.json``;
- :mod:`bench.report`: the derived figures and the targets table (``docs/performance.md``);
- :mod:`bench.stats`: percentiles;
- :mod:`bench.plots`: the PNG plots of a result file (needs matplotlib);
- :mod:`bench.profile`: py-spy samples of a target under load (needs py-spy).
"""
