"""The batched executor and its conversations: one llama.cpp context, many sequences, one
decode per step — its parameters, batches, sequence ids, budgets, threads and cancellation."""
