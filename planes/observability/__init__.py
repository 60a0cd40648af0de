"""Observability plane: logs, counters and the periodic status line."""
