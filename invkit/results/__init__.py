"""What a study keeps: its store (``store``), its models' kept outputs (``outputs``), and
reading them back (``reading``)."""
