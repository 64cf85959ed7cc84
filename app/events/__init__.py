"""Job events: one numbered sequence per job, kept in Redis (live) and the database (history)."""
