"""Accounts and who did what: annotator and operator users with their password hashes and roles
(`users`), login sessions, the login throttle and the append-only audit log (`sessions`).
"""
