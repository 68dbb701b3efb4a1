"""warmbox: run untrusted code in hardened, pre-warmed Docker sandboxes."""

__version__ = "0.1.0"
