"""Where outcomes go: the relay's metrics, loadsim's own health metrics, the run summary."""
