"""Jobs: creation with validation against the model and dataset, queries, cancel."""
