"""Running a study: ``plan`` (config → checked components, fingerprints, missing passes),
``passes`` (one ``PassSpec`` → one ``PassResult``, touching no store), and ``study`` (the
executor, the store, the report)."""
