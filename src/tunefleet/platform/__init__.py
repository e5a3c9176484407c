"""The platform layer: the SQL store, the sweep runner and the CLI."""
