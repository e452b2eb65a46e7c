"""panechat's terminal app: side-by-side chat panes served by one batched decode loop."""
