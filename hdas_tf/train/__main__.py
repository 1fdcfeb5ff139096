"""`python -m hdas_tf.train`: see `hdas_tf.cli.train`."""

from hdas_tf.cli.train import run

run()
