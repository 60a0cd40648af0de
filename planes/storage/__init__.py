"""Storage plane: the event journal, state snapshots, the registry and the outbox."""
