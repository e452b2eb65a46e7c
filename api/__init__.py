"""panechat's engine for other programs: an OpenAI-compatible HTTP server (``panechat api``)
whose requests are chats of the one batched decode loop."""
