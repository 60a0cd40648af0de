"""Market plane: the MarketGateway and the sources it owns, publishing normalized ``market:*``."""
