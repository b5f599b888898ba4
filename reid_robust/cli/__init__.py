"""Command-line entry points (``reid-eval``, ``reid-embed``, ...): each module's ``main(argv=None) -> int``
parses arguments and calls the library; ``tools/<tool>.py`` are thin wrappers around them."""
