"""Hostile scenario and config files: `validate` answers any file - whatever its size, nesting, aliases, encoding,
key types or numbers - with one clean error line naming the file and the field, within 2 s and bounded memory;
config values are type-checked. FUZZ_EXAMPLES scales the fuzz counts (default 400: 200 structured, 300 raw)."""

import copy
import gc
import json
import math
import os
import time
import tracemalloc

import click
import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings, strategies as st

from credit_model.schema import InputValidationError
from protocol.safe_yaml import MAX_BYTES, UnsafeYamlError, load_yaml
from protocol.settings import load_settings, role_command
from run_scenario import cli
from scenarios import SCENARIO_DIR
from scenarios.spec import ScenarioError, parse_scenario

SCALE = int(os.environ.get("FUZZ_EXAMPLES", "400")) / 400
STRUCTURED, RAW = max(10, int(200 * SCALE)), max(10, int(300 * SCALE))
SECONDS, PEAK_MB = 2.0, 50  # the bound per file, and the memory growth allowed while validating one
BASE = yaml.safe_load((SCENARIO_DIR / "approved.yaml").read_text())
RUNNER = CliRunner()
SLOWEST = {"seconds": 0.0, "name": None}


def validate(path, data: bytes):
    """Run `validate` on `data` written to `path`: check the answer's shape and return (error line, seconds)."""
    path.write_bytes(data)
    start = time.perf_counter()
    result = RUNNER.invoke(cli, ["validate", str(path)])
    seconds = time.perf_counter() - start
    if seconds > SLOWEST["seconds"]:
        SLOWEST.update(seconds=seconds, name=data[:60])
    assert "Traceback" not in result.output
    lines = result.output.splitlines()
    naming = [line for line in lines if str(path) in line]
    assert len(naming) == 1, result.output[:2000]
    if result.exit_code == 0:
        assert result.exception is None and naming[0].startswith(f"ok  {path}: ")
    else:
        assert result.exit_code == 1 and isinstance(result.exception, SystemExit), repr(result.exception)
        assert naming[0].strip().startswith(f"{path}: ") and len(naming[0]) < 1000
        assert all(line == naming[0] or line.startswith("Error") for line in lines), result.output[:2000]
    assert seconds < SECONDS, f"validate took {seconds:.2f} s"
    return naming[0].strip(), seconds


def measured(path, data: bytes):
    """validate() once for the time, once more under tracemalloc for the peak memory growth; prints both."""
    gc.collect()
    line, seconds = validate(path, data)
    gc.collect()
    tracemalloc.start()
    try:
        RUNNER.invoke(cli, ["validate", str(path)])
        peak = tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()
    print(f"\n{len(data):>8} bytes  {seconds:.3f} s  peak +{peak:.1f} MiB  {line[len(str(path)) + 2:][:110]}")
    assert peak < PEAK_MB, f"{peak:.1f} MiB"
    return line[len(str(path)) + 2:]  # "where: expected"


def scenario_bytes(mutate=None) -> bytes:
    data = copy.deepcopy(BASE)
    if mutate:
        mutate(data)
    return yaml.safe_dump(data, sort_keys=False).encode()


# ---- (c) one named regression test per class of hostile file --------------------------------------------------

LAUGHS = b"lol: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + b"".join(
    f"l{i}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 10)}]\n".encode() for i in range(9))


CASES = [
    ("billion_laughs", LAUGHS, "l", "more than 100000 values"),
    ("deep_flow_lists", b"[" * 10_000 + b"]" * 10_000, "", "nest"),  # libyaml stops it first, or we do
    ("deep_flow_maps", b"{a: " * 10_000 + b"1" + b"}" * 10_000, "a.a.a", "nested deeper than 32"),
    ("deep_block_maps", b"".join(b"  " * i + b"a:\n" for i in range(800)), "a.a.a", "nested deeper than 32"),
    ("not_utf8", b"name: caf\xe9\ndescription: x\n", "file", "not UTF-8: invalid byte 0xe9 at byte offset 9"),
    ("utf16_with_bom", "name: x\n".encode("utf-16"), "file", "not UTF-8"),
    ("mixed_keys_top_level", b"{1: x, a: y}\n", "(top level)", "keys must be strings, got the int key 1"),
    ("mixed_keys_in_record", scenario_bytes().replace(b"Account_age: 4\n", b"Account_age: 4\n    7: x\n"),
     "applicants[0].bank", "keys must be strings"),
    ("huge_int_account_age", scenario_bytes().replace(b"Account_age: 4\n", b"Account_age: 1" + b"0" * 400 + b"\n"),
     "applicants[0].bank.Account_age", "number of more than 64 characters"),
    ("int_beyond_2_53", scenario_bytes().replace(b"Account_age: 4\n", b"Account_age: 9007199254740993\n"),
     "applicants[0].bank.Account_age", "beyond"),
    ("minus_inf_account_age", scenario_bytes().replace(b"Account_age: 4\n", b"Account_age: -.inf\n"),
     "applicants[0].bank.Account_age", "not finite"),
    ("nan_income", scenario_bytes().replace(b"Total_income: 121500.0", b"Total_income: .nan"),
     "applicants[0].user.Total_income", "not finite"),
    ("one_byte_too_many", b"#" * (MAX_BYTES + 1), "file", "at most"),
    ("a_mib_of_list_items", b"- \n" * (MAX_BYTES // 3), "[99999]", "more than 100000 values"),
    ("a_mib_of_flow_ints", b"[" + b"1," * (MAX_BYTES // 2 - 1) + b"]", "[99999]", "more than 100000 values"),
    ("a_mib_long_number", b"name: 1" + b":1" * (MAX_BYTES // 2 - 8), "name", "number of more than 64"),
    ("python_object_tag", b"name: !!python/object/apply:os.system [echo hi]\n", "name", "!!python/object"),
    ("duplicate_key", b"name: a\nname: b\n", "name", "duplicate key"),
    ("two_documents", b"name: a\n---\nname: b\n", "(top level)", "single YAML document"),
    ("control_character", b"name: a\x00b\n", "file", "valid YAML expected"),
    ("category_is_a_list", scenario_bytes().replace(b"Income_type: Working", b"Income_type: [Working]"),
     "applicants[0].user.Income_type", "unknown value ['Working']"),
    ("name_with_trailing_newline", scenario_bytes(lambda d: d["applicants"][0].update(name="alice\n")),
     "applicants[0].name", "matching"),
]


@pytest.mark.parametrize("name, data, where, expected", CASES, ids=[case[0] for case in CASES])
def test_each_class_of_hostile_file_gets_one_clean_line(tmp_path, name, data, where, expected):
    answer = measured(tmp_path / f"{name}.yaml", data)
    assert answer.startswith(f"{where}") and expected in answer, answer


def test_shipped_scenarios_still_validate(tmp_path):
    for path in sorted(SCENARIO_DIR.glob("*.yaml")):
        line, _ = validate(tmp_path / path.name, path.read_bytes())
        assert line.startswith("ok  ")


def test_aliases_are_bounded_not_expanded():
    assert load_yaml(b"a: &x {k: 1}\nb: {<<: *x, j: 2}\n", aliases=True) == {"a": {"k": 1}, "b": {"k": 1, "j": 2}}
    for text, reason in [(b"a: &x [1]\nb: *x\n", "anchors are not allowed"), (b"a: *x\n", "aliases are not allowed")]:
        with pytest.raises(UnsafeYamlError, match=reason):
            load_yaml(text)
    with pytest.raises(UnsafeYamlError, match="no complete anchor"):
        load_yaml(b"a: &x [1, *x]\n", aliases=True)  # no recursive data
    deep = b"a: &x " + b"[" * 20 + b"]" * 20 + b"\nb: " + b"[" * 15 + b"*x" + b"]" * 15 + b"\n"
    with pytest.raises(UnsafeYamlError, match="nested deeper than 32 levels"):
        load_yaml(deep, aliases=True)
    start = time.perf_counter()
    with pytest.raises(UnsafeYamlError, match="more than 100000 values"):
        load_yaml(LAUGHS, aliases=True)
    assert time.perf_counter() - start < 0.5


def test_load_yaml_gives_plain_data_and_one_error_class():
    text = "a: 1\nb: [2.5, x, null, true, 2024-01-01, '3']\nc: {d: -9007199254740992}\n"
    assert load_yaml(text) == {"a": 1, "b": [2.5, "x", None, True, "2024-01-01", "3"], "c": {"d": -2**53}}
    assert load_yaml(b"\xef\xbb\xbf{\"n\": 1}") == {"n": 1} and load_yaml(b"") is None
    for bad in ["a: !!binary aGk=", "a: !!set {x}", "? [a]\n: 1", "a: !!bool maybe", "a: !!int x", "a: 1.0e+999",
                "{null: 1}", "{1.5: 1}", "{true: 1}", "a: 0x" + "f" * 70, "a: [unclosed", "\t- x"]:
        with pytest.raises(UnsafeYamlError) as err:
            load_yaml(bad, "f.yaml")
        assert "\n" not in str(err.value) and err.value.source == "f.yaml"


def test_parse_scenario_never_raises_anything_but_scenario_error():
    for text in ["{1: x, a: y}", "[]", "name: [", "applicants: {a: 1}", "\x00", "a: " + "[" * 100]:
        with pytest.raises(ScenarioError):
            parse_scenario(text, "x.yaml")


@pytest.mark.parametrize("party, record, field", [
    ("bank", {"Account_age": 10**400}, "Account_age"),
    ("bank", {"Account_age": -10**5000}, "Account_age"),
    ("bank", {"Account_age": float("inf")}, "Account_age"),
    ("bank", {"Account_age": float("nan")}, "Account_age"),
    ("bank", {"Account_age": [10**5000]}, "Account_age"),
    ("bank", {"Account_age": 3, 1: "x", None: 2, "z": 1}, "z"),
    ("bank", {1: "x", (2,): 3}, "(2,)"),
    ("agency", {"Years_employed": ["0-2"], "Employed": True}, "Years_employed"),
    ("agency", {"Years_employed": {"0-2": 1}, "Employed": True}, "Years_employed"),
    ("agency", {"Years_employed": "0-2", "Employed": 10**400}, "Employed"),
    ("user", [], "-"),
    (["bank"], {}, "-"),
])
def test_validate_record_raises_only_input_validation_error(schema, party, record, field):
    with pytest.raises(InputValidationError) as err:
        schema.validate_record(party, record)
    assert err.value.field == field and len(str(err.value)) < 1000


# ---- (a) and (b) fuzzing ---------------------------------------------------------------------------------------

FIELDS = ["name", "description", "applicants", "user", "bank", "agency", "steps", "action", "expect", "withhold",
          "Account_age", "Years_employed", "Employed", "Income_type", "faults", "deadline_s", "decision", "<<"]
keys = st.one_of(st.text(max_size=10), st.sampled_from(FIELDS), st.integers(), st.booleans(), st.none(),
                 st.floats(allow_nan=False))
leaves = st.one_of(
    st.none(), st.booleans(), st.integers(), st.sampled_from([10**400, -10**400, 2**53 + 1, -2**63, 2**64]),
    st.floats(), st.sampled_from([math.inf, -math.inf, math.nan, 1e308, 5e-324, -0.0]), st.text(max_size=30),
    st.sampled_from(["approved", "denied", "bank", "agency", "0-2", "18+", "Working", "predict", "explain", "bisect",
                     "alice", "ok\n", "x" * 3000]),
    st.binary(max_size=10))
hostile = st.recursive(leaves, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
                       max_leaves=25)
FRAGMENTS = [b"&a [*a, *a]", b"*a", b"&a ", b"*b ", b"<<: *a", b"!!python/object/apply:os.system ['ls']",
             b"!!binary AAAA", b"!!set {a}", b"!foo x", b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff", b"\x00", b"\xc3\x28",
             b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"[" * 40, b"{a: " * 40, b"? ", b"1e999", b".inf", b"-.nan",
             b"0x" + b"f" * 80, b"1:2:3", b"9" * 30, b"%YAML 1.1\n", b"%TAG ! tag:x,2000:\n", b"---\n", b"...\n",
             b"'", b'"', b"\\", b"\t", b"\r", b"\xc2\x85", "\u2028".encode(), b"\n", b"  ", b"- ", b": ", b", ",
             b"name: x\n", b"description: y\n", b"applicants:\n", b"- name: a\n", b"  bank: {Account_age: ",
             b"1: 2\n", b"null: 3\n", b"{1: x, a: y}", b"2024-01-01", b"~", b"yes", b"0o17", b"=", b"|\n  x\n"]


def nest(value, depth: int, as_map: bool):
    for _ in range(depth):
        value = {"a": value} if as_map else [value]
    return value


@st.composite
def structured(draw) -> bytes:
    """Random hostile data, or the approved scenario with a hostile value put somewhere; maybe shared (anchors),
    nested deep; dumped with yaml and then, maybe, mutated bytewise."""
    if draw(st.booleans()):
        data = draw(hostile)
        if draw(st.booleans()):
            shared = draw(st.lists(st.integers(), min_size=1, max_size=3))
            data = {"first": shared, "second": shared, "rest": data}  # safe_dump writes &id001 / *id001
    else:
        data = copy.deepcopy(BASE)
        node = data
        for _ in range(draw(st.integers(0, 6))):
            children = list(node) if isinstance(node, dict) else list(range(len(node)))
            if not children:
                break
            child = node[draw(st.sampled_from(children))]
            if not isinstance(child, (dict, list)):
                break
            node = child
        if draw(st.integers(0, 4)):
            value = draw(hostile)
            if isinstance(node, dict):
                node[draw(st.one_of(keys, st.sampled_from(list(node) or ["x"])))] = value
            elif node:
                node[draw(st.integers(0, len(node) - 1))] = value
        if draw(st.booleans()) and isinstance(data.get("applicants"), list) and data["applicants"]:
            data["applicants"] += data["applicants"][:1] * draw(st.integers(1, 3))  # the same object: aliases
    data = nest(data, draw(st.sampled_from([0, 0, 0, 0, 0, 5, 31, 33, 200])), draw(st.booleans()))
    try:
        text = yaml.safe_dump(data, sort_keys=False, allow_unicode=draw(st.booleans()),
                              default_flow_style=draw(st.sampled_from([None, True, False])))
    except (yaml.YAMLError, RecursionError):
        text = repr(data)
    raw = text.encode(draw(st.sampled_from(["utf-8"] * 8 + ["utf-16", "latin-1"])), "replace")
    for _ in range(draw(st.sampled_from([0, 0, 1, 2, 3]))):
        at = draw(st.integers(0, len(raw)))
        choice = draw(st.integers(0, 3))
        if choice == 0:
            raw = raw[:at] + draw(st.sampled_from(FRAGMENTS)) + raw[at:]
        elif choice == 1:
            raw = raw[:at] + raw[at + draw(st.integers(1, 20)):]
        elif choice == 2:
            raw = raw[:at] + draw(st.binary(min_size=1, max_size=4)) + raw[at + 1:]
        else:
            raw = raw[:at]
    return raw


raw_bytes = st.one_of(
    st.binary(max_size=3000),
    st.lists(st.sampled_from(FRAGMENTS), max_size=60).map(b"".join),
    st.tuples(st.sampled_from([b"", b"\xef\xbb\xbf", b"\xff\xfe", scenario_bytes()]),
              st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.binary(max_size=8)), max_size=30).map(b"".join))
    .map(b"".join),
)
FUZZ = settings(deadline=None, derandomize=True, suppress_health_check=list(HealthCheck), database=None)


@settings(FUZZ, max_examples=STRUCTURED)
@given(data=structured())
def test_fuzz_structured_yaml(tmp_path, data):
    validate(tmp_path / "structured.yaml", data)


@settings(FUZZ, max_examples=RAW)
@given(data=raw_bytes)
def test_fuzz_raw_bytes(tmp_path, data):
    validate(tmp_path / "raw.yaml", data)


def test_zz_report_slowest_fuzz_case():
    print(f"\nslowest validate seen in this module: {SLOWEST['seconds']:.3f} s on {SLOWEST['name']!r}")


# ---- (d) config files ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, text, key", [
    ("bank.yaml", "insecure: 'false'\n", "insecure"),
    ("bank.json", '{"insecure": "false"}', "insecure"),
    ("bank.yaml", "request_timeout: true\n", "request_timeout"),
    ("bank.yaml", "request_timeout: 0\n", "request_timeout"),
    ("bank.yaml", "run_timeout: .inf\n", "run_timeout"),
    ("bank.yaml", "max_sessions: 0\n", "max_sessions"),
    ("bank.yaml", "max_keys: 2.5\n", "max_keys"),
    ("bank.yaml", "workers: -1\n", "workers"),
    ("bank.yaml", "workers: null\n", "workers"),
    ("bank.yaml", "fhe: maybe\n", "fhe"),
    ("bank.yaml", "log_level: info\n", "log_level"),
    ("bank.yaml", "evaluator: 5555\n", "evaluator"),
    ("bank.yaml", "exit_with_parent: 1\n", "exit_with_parent"),
    ("bank.yaml", "evaluatr: tcp://x\n", "unknown settings"),
    ("bank.yaml", "{1: x}\n", "keys must be strings"),
    ("bank.yaml", "a: &x 1\nb: *x\n", "anchors are not allowed"),
    ("bank.yaml", "- insecure\n", "expected a mapping"),
])
def test_config_values_are_type_checked(tmp_path, name, text, key):
    config = tmp_path / name
    config.write_text(text)
    with pytest.raises(click.BadParameter) as err:
        load_settings(str(config), {})
    assert str(config) in err.value.message and key in err.value.message and "\n" not in err.value.message


def test_config_bytes_that_are_not_utf8_are_refused(tmp_path):
    config = tmp_path / "bank.yaml"
    config.write_bytes(b"insecure: \xff\n")
    with pytest.raises(click.BadParameter, match="not UTF-8"):
        load_settings(str(config), {})


def test_valid_configs_still_load_and_options_win(tmp_path):
    config = tmp_path / "bank.json"
    config.write_text(json.dumps({"evaluator": "tcp://10.0.0.5:5555", "insecure": True, "request_timeout": 5,
                                  "max_sessions": 3, "control": None, "log_level": "DEBUG"}))
    settings_ = load_settings(str(config), {"request_timeout": 9.0, "fhe": "simulate"})
    assert settings_.evaluator == "tcp://10.0.0.5:5555" and settings_.insecure is True
    assert settings_.request_timeout == 9.0 and settings_.max_sessions == 3 and settings_.fhe == "simulate"
    yaml_config = tmp_path / "bank.yaml"
    yaml_config.write_text("insecure: false\nworkers: 2\nrun_timeout: 30.5\n")
    assert load_settings(str(yaml_config), {}).insecure is False


def test_role_command_refuses_a_string_boolean_without_a_traceback(tmp_path):
    config = tmp_path / "bank.yaml"
    config.write_text("insecure: 'false'\n")
    started = []
    command = role_command("bank", started.append)
    result = RUNNER.invoke(command, ["--config", str(config)])
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit) and not started
    assert "insecure" in result.output and "Traceback" not in result.output
    config.write_text("insecure: true\nlog_level: WARNING\n")
    assert RUNNER.invoke(command, ["--config", str(config)]).exit_code == 0 and started[0].insecure is True
