"""Sessions (issue 13): a container lent out of the pool, whose Python kernel keeps state."""
