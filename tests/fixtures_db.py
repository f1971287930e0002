"""Database fixtures: placeholder until the store lands (see tenants/store.py)."""
