"""The study and benchmark harness, outside the method's files: each runs from the repository root as
`python scripts/NAME.py ...`, and is imported as `scripts.NAME` (e.g. demo.py: `from scripts import plot`)."""
