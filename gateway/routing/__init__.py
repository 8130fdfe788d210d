"""Routing: model names to upstream pools (pure), balancing and health (services)."""
