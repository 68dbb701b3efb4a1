"""Live output: Server-Sent Events for jobs (with short-lived tickets for EventSource) and the
WebSocket for interactive runs. Runs and their storage stay in `app/code` and `app/jobs`."""
