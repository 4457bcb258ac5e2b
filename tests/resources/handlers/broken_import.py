"""Test handler: fails at import time."""

raise RuntimeError("this handler cannot be imported")
