"""``python -m services.escalation``: run the escalation service."""

from services.escalation.bootstrap import main

if __name__ == "__main__":
    main()
