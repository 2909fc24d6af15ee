"""The data plane: listeners, TLS termination, routing and balancing over published Snapshots."""
