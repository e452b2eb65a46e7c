"""A reply as text: streamed tokens to visible text (detokenizing, stop strings, reasoning kept
apart), and untrusted text made safe to print."""
