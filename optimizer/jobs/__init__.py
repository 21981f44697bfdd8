"""One module per job type (its payload model, handler and JobSpec), and the registry."""
