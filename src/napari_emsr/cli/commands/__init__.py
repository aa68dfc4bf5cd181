"""The ``emsr`` commands, one module each (named as the command), each with ``run(args) -> exit code``."""
