"""The results layer: what a study keeps (its store and its models' outputs) and what is made
from it (analyses, statistics, the report)."""
