"""Facts of what a database or a Redis dataset holds, and the manifests that record them at backup time."""
