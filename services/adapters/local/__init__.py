"""The `local` driver: instances as supervised stand-in processes on this machine, edge as JSON files."""
