"""``analyze compare``: is B slower or faster than A, per metric and group, or is it noise?

* :mod:`analyzer.compare.answers` — one row per answer with its metrics (the one data source);
* :mod:`analyzer.compare.where` — ``--where-a``/``--where-b`` filters, run by DuckDB;
* :mod:`analyzer.compare.stats` — the two-sample statistics (pure);
* :mod:`analyzer.compare.comparison` — samples per metric and group, the result and its JSON;
* :mod:`analyzer.compare.render` — text, Markdown, JSON and HTML.
"""
