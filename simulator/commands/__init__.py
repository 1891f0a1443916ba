"""The command layer: parse, validate, call one function, print (one module per command group)."""
