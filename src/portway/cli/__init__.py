"""The `portway` command: one module per verb group."""
