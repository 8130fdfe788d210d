"""The client dialects the gateway speaks (OpenAI chat, Anthropic Messages) and their SSE."""
