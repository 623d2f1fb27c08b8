"""The `marc-keras` command line (installed as `marc_keras.cli`)."""
