"""The HTTP API and the `zlh` command line: thin layers over services and projections."""
