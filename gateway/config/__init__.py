"""Configuration: the frozen schema, the YAML loader and hot reload."""
