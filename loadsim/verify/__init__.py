"""Alert truth: what the relay's rules see of a run, and which alerts fire."""
