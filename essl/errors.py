"""User-facing errors.

Every problem caused by user input (a missing dataset, a bad option, a run folder that
already exists) is raised as :class:`EsslError` with a message that says what is wrong and
how to fix it. The command-line tool prints the message without a traceback and exits 2.
"""


class EsslError(Exception):
    """An error the user can fix; the message says how."""
