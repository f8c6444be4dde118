"""The parts of ``scripts/bench.py``, the training-throughput benchmark: what it measures (:mod:`benchmarks.plan`),
the digits as MNIST IDX files (:mod:`benchmarks.idx`), the timed training loops (:mod:`benchmarks.loops`), the
whole run (:mod:`benchmarks.suite`), the projection of the paper profile (:mod:`benchmarks.projection`) and the
report (:mod:`benchmarks.report`). Imported with ``scripts/`` on ``sys.path``, as the scripts import each other."""
