"""Serving fixtures (servingfixtures): tiny random-weight artifacts, the real MiniLM tokenizer."""

from servingfixtures import *  # noqa: F403
