"""The runtime: where a run is assembled (:mod:`.factory`) and run with its services (:mod:`.execute`)."""
