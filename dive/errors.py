"""The one exception type users see: a clear, one-line message about bad input."""


class DiveError(ValueError):
    """Bad input or an impossible request. The CLI prints the message alone and exits with code 2."""


def short_repr(value: object, limit: int = 60) -> str:
    """``repr(value)`` cut to one short line: how a message quotes a value read from a file or flag."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."
