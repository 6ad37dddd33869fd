"""Quality measures that need more than a heuristic (see `ptdata.quality.ifeval`)."""
