"""The three input parties as processes: the user (applicant, key owner), the bank and the agency."""
