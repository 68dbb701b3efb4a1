"""The web face of the sandbox: installed languages and pool statistics for admins."""
