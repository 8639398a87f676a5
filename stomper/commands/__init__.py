"""One module per subcommand; each takes parsed options and returns an exit code."""
