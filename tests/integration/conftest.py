"""Host fixtures: a clean environment, a tmp /opt/ml tree, tiny random models (hostfixtures)."""

from hostfixtures import *  # noqa: F403
