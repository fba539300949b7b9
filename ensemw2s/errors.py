"""Errors that mean "bad input": the CLI prints them as one line naming the input and the fix, exit 2.

Anything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """Bad input (config, data file, path, model). The message names the input and how to fix it."""


class ConfigError(UserError, ValueError):
    """A bad configuration; the message names the key and the problem."""


class DataFileError(UserError, ValueError):
    """A data file that cannot be read; the message names the file and line."""
