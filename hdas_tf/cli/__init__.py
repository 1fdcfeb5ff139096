"""The command-line mains (absl flags -> config -> one library call) behind `python -m hdas_tf.<entry>`."""
