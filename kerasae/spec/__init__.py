"""What a recipe may say: the schema and its messages (from the family table, `kerasae.families`), and the builder that
turns a recipe into a model."""
