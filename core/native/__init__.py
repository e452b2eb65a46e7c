"""The native layer under the executor: ggml's backend registry, weight layouts and the AMX
trial, RPC servers and devices, device placement, llama.cpp's log — and the facts about the
machine it runs on (CPU, cores, files replaced atomically)."""
