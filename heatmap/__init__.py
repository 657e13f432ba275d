"""The logic behind redirector.py: layers and URLs, cookies and expiry, the store, the refresher and its
sources, the upstream fetch and cache. Importable and testable without a web server."""

__version__ = '1.1.0'
