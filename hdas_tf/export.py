"""`python -m hdas_tf.export`: see ``hdas_tf.cli.export``."""

if __name__ == "__main__":
    from hdas_tf.cli.export import run

    run()
