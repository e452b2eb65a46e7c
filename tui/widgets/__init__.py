"""Widgets of the panechat app."""
