"""Analytics plane: indicators per symbol and timeframe, feature vectors and the market regime."""
