"""The REST gateway: serves the public Notes API over HTTP and calls the services over gRPC.

It owns tenants and API keys (hashed) and nothing else; every note read or write goes to a
backend service. ``create_app`` in :mod:`gateway.app` is the composition root.
"""
