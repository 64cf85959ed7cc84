"""What can be trained: local model folders, the demo model and hub ids."""
