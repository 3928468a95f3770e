"""Use cases, process managers, adapters and the wiring that turns settings into a container."""
