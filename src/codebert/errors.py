"""The one exception type that means "the user asked for something wrong"."""


class UserError(Exception):
    """A mistake in the user's input (bad path, bad file, bad option).

    The command line prints its message on one line (or one line per listed problem) and exits
    with status 2, never a traceback. Anything else that escapes is a bug in codebert.
    """
