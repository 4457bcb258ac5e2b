"""A fake of the optimum namespace package for tests (see ../README.md)."""
