"""Fault scenarios and the timeline that layers them on background load."""
