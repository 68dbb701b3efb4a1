"""The MCP endpoint at /mcp (issue 13): the official MCP SDK over streamable HTTP, with the
service's own bearer tokens, permissions, rate limits and per-user shares."""
