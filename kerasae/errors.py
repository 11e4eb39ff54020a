"""The exceptions kerasae raises for problems a user can fix.

Every user mistake (a bad recipe, a missing data file, a broken zoo entry)
raises a subclass of `KerasaeError`. The CLI turns these into one line per
problem and exit code 2; anything else is an internal error.
"""


class KerasaeError(Exception):
    """Base class for every error caused by user input."""


class RecipeError(KerasaeError):
    """A recipe is malformed or invalid.

    Args:
        problems: one string per problem, each naming its key path and where
            it came from (file and line, or the `--set` override).
        source: the recipe file the problems were found in.
    """

    def __init__(self, problems, source=None):
        if isinstance(problems, str):
            problems = [problems]
        self.problems = list(problems)
        self.source = source
        super().__init__(self._message())

    def _message(self):
        head = f"{self.source}: " if self.source else ""
        if len(self.problems) == 1:
            located = self.source and self.problems[0].startswith(str(self.source))
            return self.problems[0] if located else f"{head}{self.problems[0]}"
        listed = "\n".join(f"  - {p}" for p in self.problems)
        return f"{head}{len(self.problems)} problems:\n{listed}"


class DataError(KerasaeError):
    """A data set cannot be found, read, or has the wrong shape or values."""


class ZooError(KerasaeError):
    """A zoo entry is missing, incomplete, corrupted, or already exists."""


class TrainingStopped(KerasaeError):
    """Training stopped early (a signal, or a loss that is no longer finite); checkpoints are kept.

    Args:
        message: what happened and how to resume.
        exit_code: the CLI's exit status (130 for SIGINT, 143 for SIGTERM, 2 otherwise).
    """

    def __init__(self, message, exit_code=2):
        super().__init__(message)
        self.exit_code = exit_code


class LabelsError(KerasaeError, ValueError):
    """A conditional model was given no labels, or labels of the wrong number or range."""
