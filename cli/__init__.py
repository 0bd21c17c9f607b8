"""The numpycnn command-line front end (installed as ``numpycnn.cli``)."""
