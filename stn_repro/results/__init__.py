"""Run records and paper-comparison tables.

- :mod:`stn_repro.results.reference`: the paper's published numbers (``reference.yaml``, a copy of the project's
  reference figures shipped with the package).
- :mod:`stn_repro.results.records`: one small JSON file per finished run (``<runs>/<suite>/<cell>/seed<N>.json``).
- :mod:`stn_repro.results.summaries`: a suite's records checked and summarised per paper cell (mean, std, interval).
- :mod:`stn_repro.results.table_page`, :mod:`~stn_repro.results.table_csv`, :mod:`~stn_repro.results.table_plot`:
  the Markdown page, CSV and figure of a suite's table; :mod:`stn_repro.results.markdown`: the table renderer.
- :mod:`stn_repro.results.tables`: builds the Markdown / CSV tables and the figure comparing the runs of one suite
  with the paper (``python -m stn_repro.results.tables --runs results/runs --suite table1 --out results``).
"""
