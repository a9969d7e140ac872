"""Background jobs run by RQ workers: they take plain JSON facts and are safe to run twice."""
