"""Pydantic models at the API boundary: what a client may send and what it gets back."""
