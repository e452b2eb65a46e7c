"""Chat templates: messages to prompt text, with built-in formats or a model's own Jinja
template, rendered sandboxed in a process of its own."""
