"""The one exception type that reaches the user as a one-line message and exit status 2."""


class UserError(Exception):
    """Bad input or options: the message says what is wrong and what to do.

    The CLI prints it as one line and exits with status 2, without a traceback; the Python API
    lets it propagate so scripts can catch it.
    """
