"""The `network:` block of a scenario and the shipped profiles: what is accepted, and that every wrong value is
refused naming the file and the field (issue 21)."""

import pytest
from click.testing import CliRunner

from run_scenario import cli
from scenarios import SCENARIO_DIR
from scenarios.network import LINKS, load_profiles
from scenarios.spec import ScenarioError, load_scenario

BASE = (SCENARIO_DIR / "approved.yaml").read_text()


def scenario(tmp_path, network_yaml: str, name="net.yaml"):
    path = tmp_path / name
    path.write_text(BASE + network_yaml)
    return path


def test_every_shipped_profile_has_every_link_and_says_where_its_figures_come_from():
    profiles = load_profiles()
    assert {"lan", "wan", "mobile"} <= set(profiles)
    for name, profile in profiles.items():
        assert set(profile.links) == set(LINKS), name
        assert len(profile.source) > 40 and profile.description, name
        assert all(link.shaped for link in profile.links.values()), name
    # what the profiles are for: the applicant's uplink is the narrow one, and mobile is narrower than wan
    wan, mobile = profiles["wan"].link("user-evaluator"), profiles["mobile"].link("user-evaluator")
    assert mobile.up_mbit < wan.up_mbit < profiles["lan"].link("user-evaluator").up_mbit
    assert mobile.latency_ms > wan.latency_ms


def test_a_profile_name_and_overrides_per_link(tmp_path):
    plain = load_scenario(scenario(tmp_path, "network: mobile\n"))
    assert plain.network.profile == "mobile" and plain.network.link("user-evaluator").up_mbit == 11
    custom = load_scenario(scenario(tmp_path, "network:\n  profile: wan\n  links:\n"
                                              "    user-evaluator: {up_mbit: 20, latency_ms: 40}\n", "c.yaml"))
    link = custom.network.link("user-evaluator")
    assert (link.up_mbit, link.latency_ms, link.down_mbit, link.jitter_ms) == (20, 40, 85, 2)  # the rest: wan's
    assert custom.network.link("bank-evaluator") == load_profiles()["wan"].link("bank-evaluator")
    assert custom.network.profile == "wan+custom"
    bare = load_scenario(scenario(tmp_path, "network:\n  links:\n    user-bank: {latency_ms: 5}\n", "b.yaml"))
    assert bare.network.link("user-bank").up_mbit is None and not bare.network.link("user-evaluator").shaped
    assert load_scenario(SCENARIO_DIR / "approved.yaml").network is None


@pytest.mark.parametrize("block, where, words", [
    ("network: moon\n", "network.profile", "expected one of ['lan', 'wan', 'mobile']"),
    ("network: [1, 2]\n", "network", "expected a profile name"),
    ("network: {profile: wan, speed: 3}\n", "network.speed", "unknown field"),
    ("network:\n  links:\n    user-moon: {latency_ms: 1}\n", "network.links.user-moon", "unknown link"),
    ("network:\n  links:\n    bank-agency: {latency_ms: 1}\n", "network.links.bank-agency", "unknown link"),
    ("network:\n  links:\n    user-bank: {latency_ms: -1}\n", "network.links.user-bank.latency_ms", "from 0 to 10000"),
    ("network:\n  links:\n    user-bank: {latency_ms: 99999}\n", "network.links.user-bank.latency_ms", "from 0 to"),
    ("network:\n  links:\n    user-bank: {latency_ms: '5'}\n", "network.links.user-bank.latency_ms", "got '5'"),
    ("network:\n  links:\n    user-bank: {latency_ms: true}\n", "network.links.user-bank.latency_ms", "got True"),
    ("network:\n  links:\n    user-bank: {up_mbit: 0}\n", "network.links.user-bank.up_mbit", "from 0.1 to 100000"),
    ("network:\n  links:\n    user-bank: {down_mbit: 1e12}\n", "network.links.user-bank.down_mbit", "from 0.1"),
    ("network:\n  links:\n    user-bank: {up_mbit: -3}\n", "network.links.user-bank.up_mbit", "from 0.1"),
    ("network:\n  links:\n    user-bank: {latency_ms: 2, jitter_ms: 3}\n", "network.links.user-bank.jitter_ms",
     "at most the link's latency_ms"),
    ("network:\n  links:\n    user-bank: {loss: 0.1}\n", "network.links.user-bank.loss", "unknown field"),
    ("network:\n  links:\n    user-bank: 5\n", "network.links.user-bank", "expected a mapping"),
    ("network:\n  links: [user-bank]\n", "network.links", "expected a mapping of links"),
])
def test_wrong_values_are_refused_naming_the_file_and_the_field(tmp_path, block, where, words):
    path = scenario(tmp_path, block)
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)
    assert caught.value.path == str(path) and caught.value.where == where, str(caught.value)
    assert words in caught.value.expected, str(caught.value)
    result = CliRunner().invoke(cli, ["validate", str(path)])  # the CLI's one line says the same
    assert result.exit_code != 0 and f"{path}: {where}: " in result.output


def test_the_cli_takes_only_shipped_profiles_and_refuses_a_network_for_attached_roles(tmp_path):
    result = CliRunner().invoke(cli, ["run", "--network", "moon", "--fhe", "simulate"])
    assert result.exit_code == 2 and "'moon' is not one of" in result.output
    result = CliRunner().invoke(cli, ["run", "--network", "wan", "--attach", "tcp://127.0.0.1:1", "--insecure"])
    assert result.exit_code == 2 and "cannot be emulated for roles started elsewhere" in result.output
    slow = scenario(tmp_path, "network:\n  links:\n    user-evaluator: {up_mbit: 0.5}\n")
    result = CliRunner().invoke(cli, ["run", str(slow), "--fhe", "simulate"])
    assert result.exit_code == 2 and "user-evaluator.up_mbit 0.5 Mbit/s takes 16.8 s per 1 MiB frame" in result.output
