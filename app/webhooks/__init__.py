"""Webhooks: signed notifications that a job ended, kept in a database outbox until delivered."""
