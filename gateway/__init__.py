"""An OpenAI-compatible LLM gateway: tiers with fallbacks, a response cache and daily budgets."""

__version__ = "0.1.0"
