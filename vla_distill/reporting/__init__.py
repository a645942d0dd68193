"""The quickstart report: summary.json, report.md and plots."""
