"""`python -m hdas_tf.sample`: see ``hdas_tf.cli.sample``."""

if __name__ == "__main__":
    from hdas_tf.cli.sample import run

    run()
