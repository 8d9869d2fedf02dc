"""How components below the API speak to it."""
