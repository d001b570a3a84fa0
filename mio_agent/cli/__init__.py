"""The `mio-agent` command line."""
