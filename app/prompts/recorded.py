"""The chat template an artifact records: the prompt format it was trained with, as jinja.

An adapter's tokenizer is saved with this template, so stock transformers'
`tokenizer.apply_chat_template(messages, add_generation_prompt=True)` builds
the prompt the job trained on whatever the format: the model's own template
for `chat_template`; for `alpaca` and `plain`, the templates below, which
render exactly what `app.prompts.formats` renders (a single user message is
an instruction without input; longer chats get the role headers alpaca uses
for `messages` rows). Tests check them against the trainer's tokens.
"""
from __future__ import annotations

from app.prompts.formats import ALPACA_PROMPT, ALPACA_PROMPT_NO_INPUT

ALPACA_CHAT_TEMPLATE = (
    "{{- bos_token if bos_token is defined else '' -}}"
    "{%- if messages|length <= 2 and messages[0]['role'] == 'user' "
    "and (messages|length == 1 or messages[1]['role'] == 'assistant') -%}"
    "{{- '### Instruction:\\n' + messages[0]['content'] + '\\n\\n### Response:\\n' -}}"
    "{%- if messages|length == 2 -%}{{- messages[1]['content'] + (eos_token if eos_token is defined else '') -}}"
    "{%- endif -%}"
    "{%- else -%}"
    "{%- for message in messages -%}"
    "{%- if loop.last and message['role'] == 'assistant' -%}"
    "{{- '<|assistant|>\\n' + message['content'] + (eos_token if eos_token is defined else '') -}}"
    "{%- else -%}{{- '<|' + message['role'] + '|>\\n' + message['content'] + '\\n' -}}{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|assistant|>\\n' -}}{%- endif -%}"
    "{%- endif -%}"
)
PLAIN_CHAT_TEMPLATE = (
    "{{- bos_token if bos_token is defined else '' -}}"
    "{%- for message in messages -%}"
    "{%- if loop.last and message['role'] == 'assistant' -%}"
    "{{- message['content'] + (eos_token if eos_token is defined else '') -}}"
    "{%- else -%}{{- message['content'] + ('' if loop.last or (loop.revindex == 2 and messages[-1]['role'] == "
    "'assistant') else '\\n') -}}{%- endif -%}"
    "{%- endfor -%}"
)


def recorded_template(prompt_format: str, model_template: str | None) -> str:
    """The chat template an artifact trained in `prompt_format` is saved with."""
    if prompt_format == "chat_template":
        if not model_template:
            raise ValueError("a chat_template job needs the model's chat template")
        return model_template
    return ALPACA_CHAT_TEMPLATE if prompt_format == "alpaca" else PLAIN_CHAT_TEMPLATE


def format_record(prompt_format: str, model_template: str | None) -> dict[str, object]:
    """What `tunedeck_training.json` says about the prompt: the format, its template, Alpaca's text."""
    record: dict[str, object] = {
        "prompt_format": prompt_format,
        "chat_template": recorded_template(prompt_format, model_template),
    }
    if prompt_format == "alpaca":
        record["alpaca_template"] = {"with_input": ALPACA_PROMPT, "without_input": ALPACA_PROMPT_NO_INPUT}
    return record
