"""The Unikraft-compatible REST layer (ukc-api.md): wire types, envelope, routes."""
