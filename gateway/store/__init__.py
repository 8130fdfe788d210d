"""Storage: the small Protocol the services depend on, and its memory and Redis backends."""
