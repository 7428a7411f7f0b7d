"""What runs a scenario: the four roles started as processes, the runner that drives them, its reports, chaos."""
