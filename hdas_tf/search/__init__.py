"""Architecture search: the search model (bi-level train_step), the architecture losses, the search job."""
