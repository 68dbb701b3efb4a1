"""Webhooks: signed, stored, retried deliveries of a finished resource to its callback URL.

`urls.py` decides which URLs may be called (checked at submit and at every attempt); `service.py`
is what other domains call (`check_callback_url`, `enqueue_delivery`, `deliveries_for`);
`worker.py` sends due deliveries from the database. Nothing here imports another domain: jobs
and submissions hand in a resource kind, an id and the payload.
"""
