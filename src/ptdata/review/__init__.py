"""Human review: queues of records for people to rate, label, accept, correct and compare
(`ptdata review ...`), a keyboard-first web app on the flywheel's kind of store, agreement
between reviewers (and with a judge), and export into an immutable dataset version."""
