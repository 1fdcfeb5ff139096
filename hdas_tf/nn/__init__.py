"""Neural-network building blocks: tensor-level kernels and chains, CPU kernels, ops, cells, stages, supernets,
evaluation networks, MACs."""
