"""`python -m hdas_tf.clusters`: see ``hdas_tf.cli.clusters``."""

if __name__ == "__main__":
    from hdas_tf.cli.clusters import run

    run()
