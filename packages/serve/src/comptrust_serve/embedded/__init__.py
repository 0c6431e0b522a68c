"""The embedded server: a transformers causal LM behind TGI's and OpenAI's HTTP APIs, with continuous batching.

Importing this package is cheap; torch and transformers load only when a server starts
(``python -m comptrust_serve.embedded --model DIR``, or :func:`run_server`).
"""

from comptrust_serve.embedded.server import EmbeddedConfig, build_parser, main, run_server

__all__ = ["EmbeddedConfig", "build_parser", "main", "run_server"]
