"""Screens of the panechat app."""
