"""How the mains end on a user's mistake: one line ``hdas_tf.<entry>: error: <problem and what to do>`` on stderr
and exit status 2, with no traceback and no usage text (BUILD_NOTES "Errors and exit codes").

A mistake is recognised by its type: a flag that does not parse (absl's ``flags.Error``), absl's
``app.UsageError``, and ``hdas_tf.errors.UserError`` with its subclasses (DataError, ExportError, GenotypeError,
...). Every other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys
from typing import Callable, NoReturn

from absl import app, flags

from hdas_tf.errors import UserError

# 1 is what Python exits with on an uncaught exception, so a user's mistake and a crash stay apart.
EXIT_USER_ERROR = 2


def one_line(message) -> str:
    """``message`` with its line breaks and runs of blanks folded, so the report stays one line."""
    return " ".join(str(message).split())


def fail(entry: str, message) -> NoReturn:
    """Writes the error line of ``python -m hdas_tf.<entry>`` and exits with ``EXIT_USER_ERROR``."""
    sys.stdout.flush()
    sys.stderr.write(f"hdas_tf.{entry}: error: {one_line(message)}\n")
    sys.stderr.flush()
    raise SystemExit(EXIT_USER_ERROR)


def _flags_parser(entry: str) -> Callable:
    def parse(argv):
        try:
            return flags.FLAGS(argv)
        except flags.Error as e:  # unknown flag, bad value, missing required flag, validator
            fail(entry, f"{e} (see --helpshort)")

    return parse


def run_main(entry: str, main: Callable) -> None:
    """``app.run(main)`` for ``python -m hdas_tf.<entry>``, with flag errors and user errors reported as one line."""

    def checked_main(argv):
        try:
            return main(argv)
        except (app.UsageError, UserError) as e:
            fail(entry, e)

    app.run(checked_main, flags_parser=_flags_parser(entry))
