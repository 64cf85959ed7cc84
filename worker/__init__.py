"""Tunedeck execution side: Celery app, job task, training subprocess."""
