"""Link conditions: a scenario's `network:` block or `--network PROFILE`, per link latency, jitter, bandwidth each way.

The named profiles are network_profiles.yml beside this file (not .yaml: the globs of shipped scenarios skip it).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from protocol.safe_yaml import UnsafeYamlError, load_yaml

# The links between roles, each named client-server: `up` is what the first party sends (the user's upload on
# user-evaluator), `down` what it receives. The runner's control links are not shaped (the control plane).
LINKS = ("user-evaluator", "bank-evaluator", "agency-evaluator", "user-bank", "user-agency")
FIELDS = ("latency_ms", "jitter_ms", "up_mbit", "down_mbit")
MAX_LATENCY_MS = 10_000.0  # ten seconds one way: slower than a geostationary hop several times over
MAX_JITTER_MS = 1_000.0
MIN_MBIT, MAX_MBIT = 0.1, 100_000.0  # 100 kbit/s (a 1 MiB frame in 84 s) to 100 Gbit/s
PROFILES_FILE = Path(__file__).resolve().parent / "network_profiles.yml"


class NetworkError(ValueError):
    """A network block or profile that does not fit; names the file and the field."""

    def __init__(self, path: str, where: str, expected: str):
        self.path, self.where, self.expected = str(path), where, expected
        super().__init__(f"{path}: {where}: {expected}")


@dataclass(frozen=True)
class Link:
    """One link's conditions; `up_mbit` / `down_mbit` None is no bandwidth limit."""

    name: str
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    up_mbit: float | None = None
    down_mbit: float | None = None

    @property
    def shaped(self) -> bool:
        return bool(self.latency_ms or self.jitter_ms or self.up_mbit or self.down_mbit)

    @property
    def rtt_ms(self) -> float:
        return 2 * self.latency_ms

    def direction(self, up: bool) -> dict:
        """What the forwarder applies one way: seconds of latency and jitter, bits per second (0 = unlimited)."""
        mbit = self.up_mbit if up else self.down_mbit
        return {"latency_s": self.latency_ms / 1000, "jitter_s": self.jitter_ms / 1000,
                "rate_bps": int(mbit * 1e6) if mbit else 0}

    def as_dict(self) -> dict:
        return {"latency_ms": self.latency_ms, "jitter_ms": self.jitter_ms, "up_mbit": self.up_mbit,
                "down_mbit": self.down_mbit}


@dataclass(frozen=True)
class Network:
    """The conditions of every link of a run, and the profile they came from (if any)."""

    links: dict[str, Link] = field(default_factory=dict)
    profile: str | None = None
    description: str = ""
    source: str = ""

    def link(self, name: str) -> Link:
        return self.links.get(name, Link(name))

    @property
    def shaped(self) -> bool:
        return any(link.shaped for link in self.links.values())

    def label(self) -> str:
        return self.profile or ("custom" if self.shaped else "none")

    def as_dict(self) -> dict:
        return {"profile": self.profile, "links": {name: self.link(name).as_dict() for name in LINKS}}


def _number(path, where: str, value, low: float, high: float, unit: str, allow_null: bool = False):
    if value is None and allow_null:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or not low <= value <= high:
        null = " or null (no limit)" if allow_null else ""
        raise NetworkError(path, where, f"expected {unit} from {low:g} to {high:g}{null}, got {value!r:.80}")
    return float(value)


def parse_link(path, where: str, name: str, raw, base: Link | None = None) -> Link:
    """One link's mapping; fields it omits keep the base's (a profile's) values."""
    if not isinstance(raw, dict):
        raise NetworkError(path, where, f"expected a mapping of {', '.join(FIELDS)}, got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(FIELDS), key=str)
    if unknown:
        raise NetworkError(path, f"{where}.{unknown[0]}", f"unknown field; expected one of {list(FIELDS)}")
    values = (base or Link(name)).as_dict()
    for key, value in raw.items():
        here = f"{where}.{key}"
        if key == "latency_ms":
            values[key] = _number(path, here, value, 0.0, MAX_LATENCY_MS, "milliseconds")
        elif key == "jitter_ms":
            values[key] = _number(path, here, value, 0.0, MAX_JITTER_MS, "milliseconds")
        else:
            values[key] = _number(path, here, value, MIN_MBIT, MAX_MBIT, "Mbit/s", allow_null=True)
    if values["jitter_ms"] > values["latency_ms"]:
        raise NetworkError(path, f"{where}.jitter_ms", f"expected at most the link's latency_ms "
                                                       f"({values['latency_ms']:g}), got {values['jitter_ms']:g}")
    return Link(name, **values)


def parse_network(path, where: str, raw, profiles: dict[str, Network] | None = None) -> Network:
    """A `network:` value: a profile name, or {profile: NAME, links: {LINK: {...}}} (links override the profile)."""
    profiles = load_profiles() if profiles is None else profiles
    if isinstance(raw, str):
        raw = {"profile": raw}
    if not isinstance(raw, dict):
        raise NetworkError(path, where, f"expected a profile name ({', '.join(profiles)}) or a mapping with "
                                        f"profile and links, got {type(raw).__name__}")
    unknown = sorted(set(raw) - {"profile", "links"}, key=str)
    if unknown:
        raise NetworkError(path, f"{where}.{unknown[0]}", "unknown field; expected one of ['links', 'profile']")
    base = Network()
    if "profile" in raw:
        name = raw["profile"]
        if not isinstance(name, str) or name not in profiles:
            raise NetworkError(path, f"{where}.profile", f"expected one of {list(profiles)}, got {name!r:.80}")
        base = profiles[name]
    links = dict(base.links)
    raw_links = raw.get("links", {})
    if not isinstance(raw_links, dict):
        raise NetworkError(path, f"{where}.links", f"expected a mapping of links ({', '.join(LINKS)})")
    for name, value in raw_links.items():
        if name not in LINKS:
            raise NetworkError(path, f"{where}.links.{name!s:.80}", f"unknown link; expected one of {list(LINKS)}")
        links[name] = parse_link(path, f"{where}.links.{name}", name, value, base.link(name))
    changed = "links" in raw and bool(raw_links)
    return replace(base, links=links, profile=(f"{base.profile}+custom" if base.profile else None) if changed
                   else base.profile)


_PROFILES: dict[str, Network] | None = None


def load_profiles(path: Path = PROFILES_FILE) -> dict[str, Network]:
    """The shipped profiles: name -> Network (with where its figures come from)."""
    global _PROFILES
    if _PROFILES is not None and path == PROFILES_FILE:
        return _PROFILES
    try:
        raw = load_yaml(path.read_bytes(), str(path), max_bytes=64 * 1024)
    except (OSError, UnsafeYamlError) as exc:
        raise NetworkError(path, "file", f"a readable profiles file ({exc})") from None
    if not isinstance(raw, dict) or not raw:
        raise NetworkError(path, "(top level)", "expected a mapping of profile names")
    out = {}
    for name, entry in raw.items():
        if not isinstance(entry, dict) or set(entry) != {"description", "source", "links"}:
            raise NetworkError(path, str(name), "expected description, source and links")
        if set(entry["links"]) != set(LINKS):
            raise NetworkError(path, f"{name}.links", f"expected every link: {list(LINKS)}")
        links = {link: parse_link(path, f"{name}.links.{link}", link, entry["links"][link]) for link in LINKS}
        out[name] = Network(links, name, str(entry["description"]), str(entry["source"]))
    if path == PROFILES_FILE:
        _PROFILES = out
    return out


def network_option(value: str | None) -> Network | None:
    """`--network PROFILE` (a shipped profile's name); None keeps the scenario's own block."""
    if value is None:
        return None
    return parse_network("--network", "--network", value)
