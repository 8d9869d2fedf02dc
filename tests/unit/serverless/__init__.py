"""Unit tests of the serverless rules: catalogue, sizing, annotations, admission."""
