"""analysis: SQL metric views, A/B estimators, SRM, power, reports (see analysis/README.md)."""
