"""Studies of trained models, apart from the exporter: what the README's figures come from.

* ``demo``: the Fashion-MNIST label-noise demo behind ``make models`` (``run_demo``);
* ``claims``: the paper's claims with confidence intervals (``run_claims``, ``make claims``);
* ``confusable_precision``: does an input's first confusable class name a class the label
  noise confuses it with;
* ``report``: summaries over seeds, class-pair rankings, tables and the report files;
* ``plots``: the figures (matplotlib).

Nothing in the exporter imports this package.

Typical usage::

    from hetexport.studies.demo import DemoConfig, run_demo
    result = run_demo(DemoConfig(model_repo=Path("model_repo"), report_dir=Path("reports")))
"""
