"""The built-in plugins; each module implements hooks exactly as a third-party plugin would."""
