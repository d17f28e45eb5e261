"""Alert sensitivity: detection probability, time-to-detect and false alarms of each relay alert, by fault size.

Data flow, one module each: :mod:`knobs` (what intensity means per alert) ->
:mod:`runs` (virtual runs, recorded, a Dask task per batch) -> :mod:`rules` and
:mod:`series` (the relay's rule files; the run's samples) -> :mod:`evaluate` (the
rules evaluated in-process, held equal to promtool by a test) -> :mod:`sweep` (the
tasks on Dask, added up with :mod:`stats`) -> :mod:`render` and :mod:`plot` (table,
JSON, SVG and HTML) -> :mod:`command` (the CLI's options and checks).
"""
