"""qonic-proxy: log in to Qonic once, then let any HTTP client use the API through a local proxy."""

__version__ = "0.1.0"
