"""Command-line interface: ``mobilenets <command>`` (see ``mobilenets --help``)."""
