"""``python -m services.followup``: run the followup service."""

from services.followup.bootstrap import main

if __name__ == "__main__":
    main()
