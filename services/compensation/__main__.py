"""``python -m services.compensation``: run the compensation service."""

from services.compensation.bootstrap import main

if __name__ == "__main__":
    main()
