"""Serving: the inference handler, codecs, tasks, dynamic batching and the two server stacks."""
