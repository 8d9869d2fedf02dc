"""The nodeless command line."""
