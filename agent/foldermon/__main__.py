"""Entry point of the console script and of ``python -m foldermon``."""

from foldermon import early


def main() -> int:
    # Before anything slow is imported: a signal in the first instants must not kill the agent.
    early.record()
    from foldermon.cli import main as cli_main  # noqa: PLC0415 - after the handlers, on purpose

    return cli_main()


if __name__ == "__main__":
    raise SystemExit(main())
