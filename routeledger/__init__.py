"""routeledger."""
