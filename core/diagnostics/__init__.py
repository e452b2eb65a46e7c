"""Diagnostics: ``doctor`` (what panechat runs on), the leak-hunting soak run, and the RPC
comparison against this CPU."""
