"""The run loop: clocks, random streams, sends in flight, and the engine that ties them."""
