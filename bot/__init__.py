"""chatgate's domain: users, the free trial, memberships, conversations and the SQLite store.

No Flask, RQ or HTTP in here; the entry points (handlers/app.py, workers/, bot/cli/) wire it up.
"""
