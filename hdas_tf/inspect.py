"""`python -m hdas_tf.inspect`: see ``hdas_tf.cli.inspect``."""

if __name__ == "__main__":
    from hdas_tf.cli.inspect import run

    run()
