"""The real coding agents (Claude Code, Codex CLI) through the gateway."""
