"""`python -m hdas_tf.benchmark`: see ``hdas_tf.cli.benchmark``."""

if __name__ == "__main__":
    from hdas_tf.cli.benchmark import run

    run()
