"""Training a derived genotype from scratch: the training model and the training job."""
