"""Security rules: one small function each over facts or object dicts, with an ID and its benchmark reference."""
