"""The execution plane: venues (paper/backtest now) behind one port, and the portfolio ledger."""
