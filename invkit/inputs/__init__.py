"""What reaches a model: decoding (``data``), class matching (``classes``), a model's input
checked (``preprocessing``), checkpoints, the user's model code (``usercode``), where weights
come from (``hub``), and the code a component runs (``codeprint``)."""
