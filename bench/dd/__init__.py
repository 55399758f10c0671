"""Distilled Decoding experiments: the GPU driver, the shared evaluation rows and the table command."""
