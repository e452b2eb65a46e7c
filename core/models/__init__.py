"""Models and loading: finding a GGUF, checking its header, loading its weights, and telling
how far a load has got."""
