"""The in-container agent and the protocol it shares with the pool (protocol.py)."""
