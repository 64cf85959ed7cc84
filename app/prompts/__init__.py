"""Prompt formats: how a dataset row becomes the tokens a job trains on, in one place.

The trainer (worker/train/data.py) and the new-job form's preview both call
`encode_row`, so the preview shows, token for token, what training sees.
No torch here: the web tier uses it with `tokenizers` alone.
"""
from app.prompts.encode import IGNORE_INDEX, TextTokenizer, encode_rendered, encode_row
from app.prompts.formats import (ALPACA_PROMPT, ALPACA_PROMPT_NO_INPUT, NO_CHAT_TEMPLATE, PROMPT_FORMATS,
                                 PromptFormat, PromptFormatError, Rendered, alpaca_pair, render_row,
                                 resolve_format)

__all__ = [
    "ALPACA_PROMPT", "ALPACA_PROMPT_NO_INPUT", "IGNORE_INDEX", "NO_CHAT_TEMPLATE", "PROMPT_FORMATS",
    "PromptFormat", "PromptFormatError", "Rendered", "TextTokenizer", "alpaca_pair", "encode_rendered",
    "encode_row", "render_row", "resolve_format",
]
