"""Errors loadsim reports to its users, and the exit codes that go with them.

Every problem with user input is collected, not raised one at a time, so a user
fixing a profile sees all of them in one run (the way k6's ``Validate`` does).
Each problem names the file, the key and what was expected::

    profiles/x.toml: schedule[2].rate: must be > 0, got -5
"""

from __future__ import annotations

from dataclasses import dataclass

# The exit codes are a stable interface (the README's table): CI gates on them, as on k6's.
# A run whose threshold failed exits 99, k6's code (``EXIT_THRESHOLDS``, with the thresholds).
EXIT_OK = 0
"""Success: the run finished, the check passed, every expectation held, the report says go."""
EXIT_FAILURE = 1
"""An expectation failed: ``verify`` found an alert that did (not) fire, the drill scored below 6/6."""
EXIT_USAGE = 2
"""Bad input: a profile, an option or a file the user named. Nothing ran."""
EXIT_NO_GO = 3
"""``report``: the readiness score says no-go."""
EXIT_ERROR = 4
"""loadsim could not finish: a tool it runs failed (promtool), or a bug (the traceback is on stderr)."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with one input, located precisely enough to fix."""

    source: str
    """The file (or ``--option``) the problem is in."""
    key: str
    """The dotted key path inside the source, e.g. ``schedule[2].rate``; empty for the whole source."""
    message: str
    """What was expected, and what was found."""

    def __str__(self) -> str:
        text = f"{self.source}: {self.key}: {self.message}" if self.key else f"{self.source}: {self.message}"
        return one_line(text)


def one_line(text: str) -> str:
    r"""``text`` with every control character escaped (``\r``, ``\x1b``): a problem stays on its one line.

    File names and values are shown as the user gave them, and a name can hold a line break
    or a terminal escape sequence.
    """
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class ConfigError(Exception):
    """One or more problems with user input; the CLI prints each and exits with 2."""

    def __init__(self, problems: list[Problem]) -> None:
        if not problems:
            msg = "ConfigError needs at least one problem"
            raise ValueError(msg)
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))

    @classmethod
    def single(cls, source: str, key: str, message: str) -> ConfigError:
        """Build an error carrying exactly one problem."""
        return cls([Problem(source, key, message)])
