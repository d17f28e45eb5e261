"""Drivers sit between arrivals and outcomes: simulated (the engine's model) or real HTTP."""
