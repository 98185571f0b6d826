"""One small pure module per scheduler: commands to build and output to parse, no I/O."""
