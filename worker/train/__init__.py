"""The training subprocess: `python -m worker.train SPEC_PATH`, one process per job.

Kept out of the Celery worker so that a crash, an out-of-memory or a cancel
kills only this process and frees its memory. It talks to its parent through
the line protocol in `worker.train.events`.
"""
