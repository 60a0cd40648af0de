"""Risk plane: the RiskManager is the only gate between intents and execution."""
