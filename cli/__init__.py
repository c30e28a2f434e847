"""The `dpa` command line (installed as the package `dpa_cli`): thin, it parses, calls dpa, prints."""
