"""Accounts: users, passwords, API tokens, sessions, CSRF."""
