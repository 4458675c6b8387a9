"""NanoGPT Companion for SillyTavern: catalogue, account and settings doctor as a local service."""

__version__ = "0.1.0"
# Bumped when the HTTP contract with the ST extension changes incompatibly; the extension compares it.
API_VERSION = 1
