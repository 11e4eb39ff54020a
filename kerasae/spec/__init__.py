"""What a recipe may say: the schema and its messages, the family table, and the builder that
turns a recipe into a model."""
