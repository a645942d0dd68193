"""The ``vla-distill`` command line."""
