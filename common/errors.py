"""Errors that reach the user as one sentence instead of a traceback."""


class UserError(Exception):
    """A problem with the user's input or flags; printed as one sentence, exit code 2."""


class TrainingDiverged(Exception):
    """A loss became NaN or infinite; training stopped and the last good checkpoint was kept."""
