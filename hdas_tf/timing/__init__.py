"""Timing the real search, training, inference and input steps of one configuration (``run_benchmark``).

It sits above ``search`` and ``train`` in the import graph because it builds their models; its command line is
``python -m hdas_tf.benchmark`` (``hdas_tf.cli.benchmark``).
"""
