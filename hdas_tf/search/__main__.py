"""`python -m hdas_tf.search`: see `hdas_tf.cli.search`."""

from hdas_tf.cli.search import run

run()
