"""``python -m panderm_cli`` (what ``torchrun -m panderm_cli`` runs)."""

from panderm_cli.app import main

if __name__ == "__main__":
    main()
