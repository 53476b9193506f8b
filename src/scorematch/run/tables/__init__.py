"""Table runs: a CSV table with typed columns trained, sampled, imputed and evaluated (``tables.folder``)."""
