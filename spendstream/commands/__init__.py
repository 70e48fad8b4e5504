"""One module per ``spendstream`` subcommand; see ``spendstream.cli``."""
