"""Request handlers, one module per area of the API; routes are declared in ``web/routes.py``."""
