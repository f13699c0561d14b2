"""Security rules: small functions over configuration objects, each with an ID, a severity and its runbook procedure."""
