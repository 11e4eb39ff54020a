"""The zoo on disk: file names, atomic writes, staging, locks; SavedModel and ONNX exports."""
