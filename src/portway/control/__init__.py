"""The control plane: use-cases over the store, and the loops that drive desired state."""
