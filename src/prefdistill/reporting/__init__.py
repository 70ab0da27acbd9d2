"""Markdown reports, console tables and plots of a run, its SFT choices and a bench."""
