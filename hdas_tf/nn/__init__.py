"""Neural-network building blocks: tensor primitives, CPU kernels, ops, cells, stages, supernets, evaluation networks, MACs."""
