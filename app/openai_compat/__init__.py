"""OpenAI's API shapes under /v1, over Tunedeck's own jobs and models (models, chat and text completions)."""
