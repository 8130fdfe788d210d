"""Limits: pure window math, and the limiter service that admits and settles requests."""
