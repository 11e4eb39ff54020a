"""`kerasae serve`: the web app, what its pages ask of a model, and its static files."""
