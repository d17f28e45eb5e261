"""``python -m loadsim`` and the ``loadsim`` command.

Stop signals of a command that runs traffic are caught here, before the half second of
imports (numpy, pydantic, aiohttp) that :mod:`loadsim.cli` needs: a SIGTERM that early is
then logged and honoured like one during the run (:mod:`loadsim.runtime.signals`).
"""

import sys

from loadsim.runtime.signals import TRAFFIC_COMMANDS, StopSignals


def run() -> int:
    """The console script: catch stop signals first, then import and run the command line."""
    signals = None
    if len(sys.argv) > 1 and sys.argv[1] in TRAFFIC_COMMANDS:
        signals = StopSignals()
        signals.catch_early()
    from loadsim.cli import main

    return main(signals=signals)


if __name__ == "__main__":
    sys.exit(run())
