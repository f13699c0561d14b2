"""Run output: the report directory layout and the evidence an auditor reads."""
