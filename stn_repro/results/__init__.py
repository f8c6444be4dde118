"""Run records and paper-comparison tables.

- :mod:`stn_repro.results.reference`: the paper's published numbers (``reference.yaml``, a copy of the project's
  reference figures shipped with the package).
- :mod:`stn_repro.results.records`: one small JSON file per finished run (``<runs>/<suite>/<cell>/seed<N>.json``).
- :mod:`stn_repro.results.tables`: builds the Markdown / CSV tables and the figure comparing the runs of one suite
  with the paper (``python -m stn_repro.results.tables --runs results/runs --suite table1 --out results``).
"""
