"""The storage seam: one contract suite over every backend, and Redis-specific tests."""
