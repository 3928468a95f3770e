"""Adapters: concrete implementations of the ports in `services.ports` (real drivers and fakes)."""
