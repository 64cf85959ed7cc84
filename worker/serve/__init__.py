"""The inference process (`tunedeck serve`): one base model held once, many adapters, answers streamed over Redis."""
