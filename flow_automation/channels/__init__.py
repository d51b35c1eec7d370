"""Messaging channels: pure Python (no Frappe) clients, payload builders and parsers."""
