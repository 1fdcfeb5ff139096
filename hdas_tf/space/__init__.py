"""Search spaces and architectures as data: the op registry, search spaces, genotypes, operator clusters."""
