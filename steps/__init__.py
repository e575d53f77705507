"""ZenML steps: thin wrappers that call the core library (``iat``) and name their artifacts."""
