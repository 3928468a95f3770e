"""Read models: each projection owns its tables and writes them with its log position in one transaction."""
