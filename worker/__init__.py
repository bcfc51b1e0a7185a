"""xquik-disconnect-worker: disconnect many X accounts from Xquik within the API's rate limit."""

__version__ = "0.1.0"
