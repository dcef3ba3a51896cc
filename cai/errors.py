"""The one error type users see: a single line that names the file, line, key or value at fault."""


class CaiError(Exception):
    """A problem with the user's input or setup. The CLI prints it as one line and exits with code 2."""
