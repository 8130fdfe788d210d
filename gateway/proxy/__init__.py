"""The proxy: the upstream client and the chat recipe."""
