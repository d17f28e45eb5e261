"""Benchmarks of loadsim's own hot paths (not part of the installed package)."""
