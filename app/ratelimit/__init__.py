"""Rate limits: a default limit per caller on every request, one on code execution, two on login.

- `keys`: who the caller is (client address behind trusted proxies, bearer token, the identity).
- `counter`: slowapi's `Limiter` (storage and strategy) with a memory fallback, and what a caller
  has left (`LimitState`).
- `middleware`: the default limit and the X-RateLimit-* headers, in pure ASGI.
- `dependencies`: the execute and login limits for routes, and `install_rate_limiting`.

It knows nothing of users: the app installs a `CallerIdentity` (`app.auth.callers`) that says
who a bearer token belongs to, so the dependency runs one way (auth -> ratelimit -> core).
"""
