"""The ZLH domain: aggregates, events and pure rules. No I/O, no clock, no environment."""
