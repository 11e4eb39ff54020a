"""Training a recipe: the loop, its checkpoints and callbacks, and the zoo entry it writes."""
