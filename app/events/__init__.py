"""Ordered events per resource (a job today, a submission later): publish from worker threads,
replay after a Last-Event-ID, follow live from the event loop."""
