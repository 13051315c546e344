"""The command line's pieces: what each command does, the audit command, the inspect view, lifetime."""
