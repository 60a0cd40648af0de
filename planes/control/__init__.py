"""Control plane: the Orchestrator owns the lifecycle and the boot/shutdown sequence."""
