"""The pure domain: validation rules, names, state machines. Imports only the standard library."""
