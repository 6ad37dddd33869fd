"""Data selection: methods over a pool (scores, lengths, embeddings) and the report that puts
them side by side with the random and longest-response baselines."""
