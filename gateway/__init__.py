"""An edge gateway for LLM inference.

Owns nothing itself; see ``gateway.app`` for the wiring and ``gateway.cli`` for the commands.
"""

from __future__ import annotations

__version__ = "0.1.0"
