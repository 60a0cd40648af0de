"""Strategy plane: the Strategy SDK runtime (StrategyManager) and the built-in strategies."""
