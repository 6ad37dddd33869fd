"""Statistics over record streams, and (later) the HTML report."""
