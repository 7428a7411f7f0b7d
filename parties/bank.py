"""The bank role: owns Account_age, encrypts it with the user's client key, sends it to the evaluator."""

from __future__ import annotations

from protocol.settings import RoleSettings, role_command, run_as_process

from .feature_party import FeatureParty, run_party


class Bank(FeatureParty):
    def __init__(self, settings: RoleSettings):
        super().__init__("bank", settings)


main = role_command("bank", lambda settings: run_party(Bank, settings))

if __name__ == "__main__":
    run_as_process(main)
