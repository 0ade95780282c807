"""Errors that are a user's mistake, not a bug: commands report them in one line (``flowse.utils.cli``)."""
from __future__ import annotations


class UserError(Exception):
    """A wrong input or option the user can fix (the message says what and how); not a bug."""
