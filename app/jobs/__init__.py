"""Queued jobs: a run stored first and run later by the job workers.

Dependencies run one way. `spec` (what a run is) and `results` (run <-> job columns) sit at the
bottom; `repository` holds the SQL; `shares` and `queue` are the in-memory bookkeeping (per-user
shares, the fair queue); `service` holds the rules and hands work to the queue by id; `worker`
takes from the queue and is imported only by the lifespan.
"""
