"""``python -m services.intake``: run the intake service."""

from services.intake.bootstrap import main

if __name__ == "__main__":
    main()
