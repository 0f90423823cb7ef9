"""The command line (`python -m owl_core` / `owl-studio`): the dispatcher (`main`), the
prompt-source flags every command shares, and `project` subcommands. Application layer."""
