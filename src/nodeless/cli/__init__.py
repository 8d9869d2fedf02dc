"""The nodeless command line."""

