"""``loadsim calibrate``: a profile fitted to a relay's history in Prometheus, with every fit's uncertainty and test.

The data flow is the layout: :mod:`.read` takes the window's hourly sends and totals
from Prometheus; :mod:`.fit_mime`, :mod:`.fit_latency`, :mod:`.fit_errors` and
:mod:`.fit_rate` fit each part of the outcome model and the schedule (by maximum
likelihood with :mod:`.mle`, tested with :mod:`.goodness`); :mod:`.result` assembles the
profile; :mod:`.write_profile`, :mod:`.write_report` and :mod:`.plot` write it with its
report and plot; :mod:`.run` does all of it for the command line.
"""
