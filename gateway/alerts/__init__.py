"""The alert service: webhooks, their queue and leader, thresholds."""
