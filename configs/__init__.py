"""The run configs users start from, in the wheel as `marc_keras.configs` (`--config demo`)."""
