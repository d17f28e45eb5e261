"""After a window: history backfilled into a real Prometheus (:mod:`.backfill`), and the observation report."""
