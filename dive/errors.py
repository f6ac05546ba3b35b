"""The one exception type users see: a clear, one-line message about bad input."""


class DiveError(ValueError):
    """Bad input or an impossible request. The CLI prints the message alone and exits with code 2."""
