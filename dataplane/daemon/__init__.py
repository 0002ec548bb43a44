"""The node daemon: `dataplane run`."""
