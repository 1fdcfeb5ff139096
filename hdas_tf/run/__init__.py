"""What every run shares: the step loop, strategies, the run directory, runtime settings, optimizers."""
