"""Authentication: the key format (pure) and the key service (lookup, cache, lifecycle)."""
