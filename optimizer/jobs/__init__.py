"""Job handlers, registered by job type."""
