"""Teacher generation: sampling, Evol-Instruct, rewriting, and the AI judges."""
