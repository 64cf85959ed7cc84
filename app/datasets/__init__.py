"""Dataset upload: validation line by line, normalisation to JSONL, storage."""
