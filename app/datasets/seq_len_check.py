"""Will any row of this dataset train at this seq_len? Asked at submission and by the job form.

Why before launch: the trainer drops a row whose prompt fills seq_len (nothing is left to learn from)
and fails with "no trainable rows" when it drops them all, after the job was queued and started.
The rows' token lengths are known before that (app.datasets.token_lengths, counted with the
model's tokenizer in the job's prompt format), so the refusal is a 422 on `hyperparameters.seq_len`.
Only counted lengths refuse: an estimate (a hub model, no tokenizer here) is not sure enough to.
"""
from __future__ import annotations

from sqlmodel import Session

from app.planner.real_data import refusal


def seq_len_refusal(session: Session, dataset_id: str, model: str, seq_len: int,
                    prompt_format: str | None = None, wait: float | None = None) -> str | None:
    """The message refusing `seq_len` for this dataset and model, or None when some row trains
    (or when the lengths cannot be counted here: unknown dataset, no local tokenizer, a bad format).

    `wait`: at most that many seconds for a first count (None: as long as it takes, as submission
    does; a live form passes a second or so, and says nothing until the count is cached)."""
    from app import storage
    from app.datasets.token_lengths import dataset_lengths
    from app.models import Dataset
    from app.prompts import PromptFormatError

    row = session.get(Dataset, dataset_id)
    if row is None:
        return None
    try:
        lengths = dataset_lengths(storage.absolute(row.path), model, prompt_format, wait=wait)
    except (PromptFormatError, OSError, ValueError):
        return None
    if not lengths.counted:
        return None
    return refusal(list(lengths.rows), seq_len)
