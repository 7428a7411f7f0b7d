"""Command line of fhe-credit-sim: run and validate scenarios, list them, train the model."""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path

import click

from credit_model.deployment import COMMITTED, DEFAULT as DEFAULT_DEPLOYMENT
from scenarios import SCENARIO_DIR, shipped_scenarios
from scenarios.spec import ScenarioError, load_scenario

# `run` with no file: the default deployment's approved applicant (the README's main job).
DEFAULT_SCENARIO = shipped_scenarios(DEFAULT_DEPLOYMENT) / "approved.yaml"


DEPLOYMENT_HELP = (f"Deployment: {', '.join(COMMITTED)} (committed, in deployment_files/) or a directory; default: "
                   f"the scenario's own `deployment:`, else {DEFAULT_DEPLOYMENT}.")


def deployment_option(help_text: str = DEPLOYMENT_HELP):
    return click.option("--deployment", metavar="NAME|DIR", default=None, help=help_text)


def network_option_decorator():
    from scenarios.network import load_profiles

    return click.option("--network", "network_name", type=click.Choice(sorted(load_profiles())), default=None,
                        help="Emulate these link conditions (a profile of scenarios/network_profiles.yml) through "
                             "the shaping forwarder; overrides a scenario's own network: block.")


def _network(name):
    from scenarios.network import network_option

    return network_option(name)


def _scenario_paths(paths) -> list:
    """The files given, a directory standing for its *.yaml (sorted): `run scenarios/kaggle_xgboost`."""
    out = []
    for path in paths:
        path = Path(path)
        if path.is_dir():
            found = sorted(path.glob("*.yaml"))
            if not found:
                raise click.ClickException(f"{path}: a directory with no *.yaml scenario")
            out.extend(found)
        else:
            out.append(path)
    return out


def bench_case_name(flip: str) -> str:
    """The bench's explanation applicant for a bin that flips the decision: its name is its session's key id
    ([A-Za-z0-9._-]), so a bin such as "18+" is spelt "18plus" (bench --quick on kaggle_logistic was refused)."""
    return "bin_found_" + re.sub(r"[^A-Za-z0-9._-]", "_", flip.replace("+", "plus"))


def _load_all(paths, deployment=None) -> list:
    loaded, errors = [], []
    for path in _scenario_paths(paths):
        try:
            loaded.append(load_scenario(path, deployment))
        except ScenarioError as exc:
            errors.append(str(exc))
    if errors:
        raise click.ClickException("invalid scenario file(s):\n  " + "\n  ".join(errors))
    return loaded


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Privacy-preserving credit-card approval with FHE, as four ZeroMQ processes."""


@cli.command()
@click.argument("scenario_files", nargs=-1, type=click.Path(path_type=Path))
@click.option("--report-json", type=click.Path(dir_okay=False, path_type=Path), help="Write the JSON report here.")
@click.option("--report-md", type=click.Path(dir_okay=False, path_type=Path), help="Write the Markdown report here.")
@click.option("--report-html", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the HTML report here (timeline per role, messages between lanes, bytes per link; readable "
                   "offline).")
@click.option("--fhe", type=click.Choice(["execute", "simulate"]), default=None,
              help="execute: real FHE (default). simulate: Concrete simulation, INSECURE, for fast iteration.")
@click.option("--strategy", type=click.Choice(["linear", "bisect"]), default=None,
              help="Explainability search (overrides the scenario's default; a step's own strategy wins).")
@click.option("--transport", type=click.Choice(["ipc", "tcp"]), default=None, help="Endpoints for the roles.")
@deployment_option()
@click.option("--insecure", is_flag=True,
              help="Run the roles without CurveZMQ (by default every run gets fresh CURVE keys).")
@click.option("--attach", metavar="ENDPOINT", default=None,
              help="Start no process: bind the control endpoint (e.g. tcp://0.0.0.0:5560) and drive roles "
                   "started elsewhere with --control pointing here.")
@click.option("--keys-dir", type=click.Path(file_okay=False, exists=True), default=None,
              help="With --attach: the CURVE keys directory holding runner.key_secret and the roles' *.key.")
@click.option("--liveness", type=click.FloatRange(0.5, 3600), default=4.0, show_default=True,
              help="Seconds without a heartbeat after which a role is lost (also given to the roles it starts).")
@click.option("--keep-run-dir", is_flag=True,
              help="Keep each run's directory (CURVE secret keys, evaluation keys, ciphertexts, role logs) and print "
                   "where; by default it is removed whenever the run ends, Ctrl-C, SIGTERM and SIGKILL included.")
@network_option_decorator()
def run(scenario_files, report_json, report_md, report_html, fhe, strategy, transport, deployment, insecure, attach,
        keys_dir, liveness, keep_run_dir, network_name):
    """Start the four processes and drive SCENARIO_FILES (a directory: its *.yaml; default: the default
    deployment's approved applicant, scenarios/kaggle_logistic/approved.yaml)."""
    from simulation.links import check_liveness
    from simulation.report import INSECURE, network_line, phase_table, summary_table, write_json, write_markdown
    from simulation.runner import ScenarioRunner
    from simulation.stopping import stop_on_signals

    if attach and not (keys_dir or insecure):
        raise click.UsageError("--attach needs --keys-dir (the roles' CURVE keys) or --insecure")
    network = _network(network_name)
    scenarios = _load_all(scenario_files or [DEFAULT_SCENARIO], deployment)
    for scenario in scenarios:
        chosen = network if network is not None else scenario.network
        if chosen is not None and chosen.shaped:
            if attach:
                raise click.UsageError(f"{scenario.path}: a network cannot be emulated for roles started elsewhere "
                                       "(--attach): shape their hosts' links instead")
            try:
                check_liveness(chosen, liveness)
            except ValueError as exc:
                raise click.UsageError(f"{scenario.path}: {exc}")
    reports = []
    for scenario in scenarios:
        mode = fhe or scenario.fhe
        click.secho(f"== scenario {scenario.name}: {scenario.description}", bold=True)
        if mode == "simulate":
            click.secho(f"!! {INSECURE}", fg="red", bold=True)
        with stop_on_signals():  # Ctrl-C / SIGTERM: a clean failure, the roles stopped, the reports written
            report = ScenarioRunner(scenario, fhe=fhe, strategy=strategy, transport=transport,
                                    deployment=scenario.deployment, progress=click.echo, secure=not insecure,
                                    attach=attach, keys_dir=keys_dir, liveness=liveness,
                                    keep_run_dir=keep_run_dir, network=network).run()
        reports.append(report)
        for app in report.applicants:
            click.echo(f"{app.session_id}: {app.explanation or app.decision or '(no decision)'}")
            for failure in app.failures:
                click.secho(f"  FAILED {failure}", fg="red")
        click.echo(summary_table(report))
        click.echo(network_line(report))
        click.echo(phase_table(report))
        verdict = "PASSED" if report.passed else f"FAILED{': ' + report.fatal if report.fatal else ''}"
        if report.passed and report.failure is not None:
            verdict += f" (failed as expected: {report.failure['role']} at {report.failure['step']})"
        click.secho(f"scenario {scenario.name}: {verdict} in {report.duration_s:.1f} s",
                    fg="green" if report.passed else "red", bold=True)
        if report.stopped:
            click.secho(f"run {report.stopped}: the scenarios after {scenario.name} were not run", fg="red")
            break
    if report_json:
        write_json(reports, report_json)
    if report_md:
        write_markdown(reports, report_md)
    if report_html:
        from simulation.html_report import write_html

        write_html(reports, report_html)
    failed = [r.scenario.name for r in reports if not r.passed]
    stopped = next((r.stopped for r in reports if r.stopped), None)
    if stopped:
        raise click.ClickException(f"{stopped}: {', '.join(failed)} did not complete")
    if failed:
        raise click.ClickException(f"expectations did not hold in: {', '.join(failed)}")


@cli.command("cluster-certs")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--name", "names", multiple=True, default=("evaluator", "scheduler", "worker"), show_default=True,
              help="One certificate per name (repeat the option).")
def cluster_certs(directory, names):
    """Create the evaluator operator's private CA and TLS certificates for its Dask cluster (openssl).

    DIRECTORY/<name>/ holds ca.pem, cert.pem and key.pem: give it to that host (`python -m evaluator --engine dask
    --cluster-tls DIR/evaluator`, `dask scheduler --tls-ca-file ... --tls-cert ... --tls-key ...`, the same for
    `dask worker`). DIRECTORY/ca.key signs them and stays with the operator. The parties never get any of these.
    """
    from evaluator.cluster import make_certs

    make_certs(directory, tuple(names))
    click.echo(f"wrote a CA and {len(names)} certificate(s) to {directory}/<name>/ ({', '.join(names)})")


@cli.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
def keys(directory):
    """Create CurveZMQ key pairs for every role for runs on several hosts: DIRECTORY/<role>/ holds that role's secret
    key and every role's public key (files 0600, directories 0700).

    Give each host only its own role's directory (the runner's to `run --attach --keys-dir`).
    """
    from protocol.curve import ROLES, create_keys

    create_keys(directory)
    click.echo(f"wrote {len(ROLES)} key pairs to {directory}/<role>/ ({', '.join(ROLES)}): give each role "
               "(each host) only its own directory")


@cli.command()
@click.argument("scenario_files", nargs=-1, required=True, type=click.Path(path_type=Path))
@deployment_option("Check the applicants against this deployment's schema instead of the scenario's own.")
def validate(scenario_files, deployment):
    """Check scenario files (against their deployment's schema) without starting any process."""
    for scenario in _load_all(scenario_files, deployment):
        click.echo(f"ok  {scenario.path}: {scenario.name} ({len(scenario.applicants)} applicant(s), "
                   f"deployment {Path(scenario.deployment).name})")


@cli.command()
@click.option("--quick", is_flag=True, help="A reduced set (fewer repeats, no depth sweep): a few minutes.")
@click.option("--hostile", is_flag=True, help="Only the hostile-peer figures (slow reader, floods, many frames, "
                                               "flood-then-disconnect per role, killed runners, hostile files).")
@click.option("--network", "network", is_flag=True,
              help="Only the network emulation's fidelity: the evaluation-key upload at 20 Mbit/s, the round trip a "
                   "request gains per configured latency, a dead or stopped evaluator named across mobile's link.")
@click.option("--engines", "engines", is_flag=True,
              help="Only the evaluator's engines side by side: warm-run latency through Dask against in-process, "
                   "throughput with 1 and 2 single-threaded Dask workers (real FHE).")
@click.option("--repeats", type=click.IntRange(1, 1000), default=20, show_default=True,
              help="With --engines: timed warm runs per engine. With --hostile: floods per role (and half as many runner kills per signal and mode).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), help="Write the figures here.")
@click.option("--report-html", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the measured latency distributions here (HTML, readable offline).")
@deployment_option(f"Deployment to measure (default {DEFAULT_DEPLOYMENT}); its shipped scenarios give the applicants.")
def bench(quick, hostile, network, engines, repeats, json_path, report_html, deployment):
    """Measure the committed model end to end with real FHE and print the figures."""
    import json
    import platform

    from credit_model.deployment import load_deployment
    from bench.costs import run_benchmarks

    dep = load_deployment(deployment)
    if network:
        from bench.network import run_network_bench

        figures = run_network_bench(str(dep.directory), click.echo, quick)
        if json_path:
            json_path.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
        if report_html:
            _bench_html(report_html, "bench --network", figures)
        return
    shipped = shipped_scenarios(dep.name)
    approved = load_scenario(shipped / "approved.yaml", dep.directory).applicants[0].data
    if engines:
        from bench.engines import run_engine_bench

        figures = run_engine_bench(dep, approved, click.echo, repeats)
        figures["machine"] = {"cores": os.cpu_count(), "cpu": _cpu_model(), "python": platform.python_version()}
        if json_path:
            json_path.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
        return
    if hostile:
        from bench.hostile import run_hostile_bench

        figures = run_hostile_bench(dep, approved, click.echo, repeats)
        if json_path:
            json_path.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
        return
    no_bin = load_scenario(shipped / "denied_no_bin_helps.yaml", dep.directory).applicants[0].data
    found = load_scenario(shipped / "denied_bin_found.yaml", dep.directory).applicants[0]
    bins = dep.bins
    flip = next(s.expect.bin for s in found.steps if s.expect.bin)
    cases = {"no_bin_helps": (no_bin, bins), bench_case_name(flip): (found.data, bins[:bins.index(flip)])}
    started = time.time()
    figures = run_benchmarks(dep, shipped, approved, cases, quick, click.echo)
    figures["machine"] = {"cores": os.cpu_count(), "cpu": _cpu_model(), "python": platform.python_version()}
    figures["seconds"] = round(time.time() - started, 1)
    click.secho("== headline", bold=True)
    for key in ("scenario_wall_s", "scenario_wall_simulate_s", "roles_ready_s", "client_key_import_s",
                "overhead_ratio", "overhead_ratio_first", "fhe_run_warm_s", "fhe_run_first_s", "fhe_run_first_wait_s",
                "first_to_warm_ratio", "eval_key_bytes", "accuracy_float", "accuracy_quantized",
                "balanced_accuracy_quantized", "bisect_max_runs",
                "linear_max_runs", "repeat_speedup", "worker_scaling"):
        click.echo(f"{key:28} {figures[key]}")
    if json_path:
        json_path.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    if report_html:
        _bench_html(report_html, "bench", figures)


def _bench_html(path: Path, title: str, figures: dict) -> None:
    from bench.distributions import latency_series
    from simulation.html_report import write_distributions

    write_distributions(path, title, latency_series(figures), "Every repeat of the figures bench measured, seconds.")


@cli.command()
@click.option("--sessions", type=click.IntRange(1, 100), default=10, show_default=True)
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), help="Write the figures here.")
@click.option("--report-html", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the sessions' latency distributions here (HTML, readable offline).")
@deployment_option(f"Deployment to load (default {DEFAULT_DEPLOYMENT}).")
@network_option_decorator()
@click.option("--population", type=click.IntRange(1, 1_000_000), default=None,
              help="Instead: the first N applicants of the held-out file through the four roles, one at a time; "
                   "every decision checked against the clear model, then the confusion matrix and the costs.")
@click.option("--fhe", type=click.Choice(["execute", "simulate"]), default="execute", show_default=True,
              help="With --population.")
@click.option("--engine", type=click.Choice(["local", "dask"]), default="local", show_default=True,
              help="With --population: the evaluator's engine.")
@click.option("--workers", type=click.IntRange(0, 64), default=0, show_default=True,
              help="With --population and --engine dask: a local Dask cluster of N worker processes (default 2).")
@click.option("--worker-threads", type=click.IntRange(0, 64), default=0, show_default=True,
              help="With --population: the evaluator's --worker-threads (cores per run on each worker).")
@click.option("--keys", "keys_mode", type=click.Choice(["reused", "per-applicant"]), default="reused",
              show_default=True, help="With --population: one key set for everyone, or new keys per applicant.")
def load(sessions, json_path, report_html, deployment, network_name, population, fhe, engine, workers, worker_threads,
         keys_mode):
    """Many applicants in flight at once against one evaluator process (real FHE); checks every decision.

    With --population N: N applicants of the held-out file, one after another, through the four roles."""
    import json

    from credit_model.deployment import load_deployment
    from bench.load import concurrent_sessions

    if population is not None:
        from bench.population import population as run_population
        if engine != "dask" and (workers or worker_threads):
            raise click.UsageError("--workers and --worker-threads are the Dask engine's: use --engine dask --workers N")
        if engine == "dask" and workers == 0:
            workers = 2
        summary = run_population(load_deployment(deployment), population, fhe, engine, workers, keys_mode,
                                 click.echo, worker_threads=worker_threads)
        if json_path:
            json_path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        if summary["agree_with_clear_model"] != population:
            raise click.ClickException(f"{population - summary['agree_with_clear_model']} applicant(s) failed or "
                                       f"disagree with the clear model: {summary['failed'][:3]} {summary['disagree'][:10]}")
        return
    network = _network(network_name)
    summary = concurrent_sessions(load_deployment(deployment), sessions, click.echo, network=network)
    if json_path:
        json_path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    if report_html:
        from simulation.html_report import write_distributions

        write_distributions(report_html, f"load: {sessions} concurrent sessions", summary["latencies_s"],
                            f"{summary['correct']}/{sessions} correct in {summary['wall_s']} s; network "
                            f"{network.label() if network else 'none'}")
    if summary["correct"] != sessions:
        raise click.ClickException(f"{sessions - summary['correct']} session(s) failed or were wrong: "
                                   f"{summary['failed']}")


@cli.command()
@click.option("--role", type=click.Choice(["evaluator", "bank", "agency"]), required=True)
@click.option("--endpoint", required=True, help="Where the implementation under test listens.")
@click.option("--server-key", default=None, help="Its CURVE public key (Z85); default: <role>.key in --keys-dir.")
@click.option("--keys-dir", type=click.Path(file_okay=False, exists=True), default=None,
              help="CURVE keys of the roles the checks speak as (user, bank, agency); omit for an --insecure target.")
@click.option("--fhe", type=click.Choice(["execute", "simulate"]), default="execute",
              help="How the evaluator under test runs (decides what the legal sequence expects).")
@click.option("--timeout", type=float, default=30.0, show_default=True, help="Deadline of every reply, seconds.")
@deployment_option(f"The deployment the implementation serves (its circuit, key size and schema); "
                   f"default {DEFAULT_DEPLOYMENT}.")
@click.option("--max-sessions", type=click.IntRange(1, 1000), default=20, show_default=True,
              help="The evaluator's session bound (its --max-sessions), for the eviction check.")
def conformance(role, endpoint, server_key, keys_dir, fhe, timeout, deployment, max_sessions):
    """Check any implementation of a serving role against the protocol; one line per check."""
    from protocol.conformance import run_conformance

    def report(result):
        click.echo(f"{'PASS' if result.ok else 'FAIL'}  {result.name}" + (f": {result.detail}" if result.detail else ""))

    results = run_conformance(role, endpoint, keys_dir, server_key.encode() if server_key else None,
                              fhe, timeout, report, deployment, max_sessions)
    failed = sum(not r.ok for r in results)
    click.echo(f"{len(results) - failed} passed, {failed} failed")
    if failed:
        sys.exit(1)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


@cli.command()
@click.argument("scenario_files", nargs=-1, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--iterations", type=click.IntRange(1, 10_000), default=30, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the fault draws (role, kind, moment).")
@click.option("--fhe", type=click.Choice(["execute", "simulate"]), default=None,
              help="Override the scenarios' mode (simulate: INSECURE, fast).")
@click.option("--liveness", type=click.FloatRange(0.5, 3600), default=4.0, show_default=True,
              help="Seconds without a heartbeat after which a role is lost (passed to every role).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), help="Write the results here.")
@click.option("--dask-workers", type=click.IntRange(0, 64), default=0, show_default=True,
              help="Run the evaluator on a local Dask cluster of N workers, and aim faults at its workers too "
                   "(a worker fault must never fail the run: the cluster retries it elsewhere).")
@deployment_option()
def chaos(scenario_files, iterations, seed, fhe, liveness, json_path, dask_workers, deployment):
    """Random faults (kill, stop, stop-then-continue; any role; a random moment) on real runs of SCENARIO_FILES
    (default: approved, denied_bin_found, several_applicants); each must pass or fail cleanly naming the role."""
    import json

    from simulation.chaos import run_chaos

    paths = scenario_files or [SCENARIO_DIR / f"{n}.yaml" for n in ("approved", "denied_bin_found",
                                                                    "several_applicants")]
    scenarios = _load_all(paths, deployment)
    if any(s.faults or s.expect_failure for s in scenarios):
        raise click.UsageError("chaos takes scenarios without faults of their own")
    result = run_chaos(scenarios, iterations, seed, fhe, liveness, click.echo, dask_workers=dask_workers)
    summary = result["summary"]
    click.echo(f"outcomes: {summary['outcomes']}")
    click.echo(f"time from fault to the runner's exit (clean failures): {summary['detection_s']}")
    if json_path:
        json_path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    click.secho(f"{summary['passed']} passed, {summary['failed']} failed", bold=True,
                fg="green" if not summary["failed"] else "red")
    if summary["failed"]:
        sys.exit(1)


@cli.command()
@deployment_option(f"Deployment whose schema, circuit and bins the page uses (default {DEFAULT_DEPLOYMENT}).")
@click.option("--port", type=click.IntRange(1, 65535), default=7860, show_default=True,
              help="Serve the page on http://127.0.0.1:PORT.")
@click.option("--fhe", type=click.Choice(["execute", "simulate"]), default="execute", show_default=True,
              help="execute: real FHE. simulate: Concrete simulation, INSECURE (the page says so in a banner).")
@click.option("--attach", metavar="ENDPOINT", default=None,
              help="Start no process: bind the control endpoint and drive roles started elsewhere (as run --attach).")
@click.option("--keys-dir", type=click.Path(file_okay=False, exists=True), default=None,
              help="With --attach: the CURVE keys directory holding runner.key_secret and the roles' *.key.")
@click.option("--insecure", is_flag=True, help="Run the roles without CurveZMQ.")
@click.option("--transport", type=click.Choice(["ipc", "tcp"]), default="ipc", show_default=True,
              help="Endpoints for the roles it starts.")
@click.option("--save-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where 'Save as scenario' writes: each `ui` run in a folder of its own inside it (0700, files "
                   "0600). Default: $XDG_DATA_HOME/fhe-credit-sim/saved (~/.local/share/...), out of the source tree.")
@click.option("--liveness", type=click.FloatRange(0.5, 3600), default=4.0, show_default=True,
              help="Seconds without a heartbeat after which a role is lost (also given to the roles it starts).")
@click.option("--tabs", type=click.IntRange(1, 16), default=8, show_default=True,
              help="Browser tabs that may hold keys at once (each is one applicant).")
@network_option_decorator()
@click.option("--applications-per-tab", type=click.IntRange(1, 1000), default=25, show_default=True,
              help="Decided applications a tab keeps (what 'Save as scenario' writes); the evaluator is started "
                   "with --max-sessions TABS x this, and every role with --max-keys max(20, 2 x TABS).")
def ui(deployment, port, fhe, attach, keys_dir, insecure, transport, save_dir, liveness, tabs, network_name,
       applications_per_tab):
    """Start the four roles (or attach to them) and serve the demo's web page on 127.0.0.1 until Ctrl-C/SIGTERM."""
    from credit_model.deployment import DeploymentError, load_deployment
    from simulation.report import INSECURE
    from web.capacity import Limits
    from web.driver import RoleDriver

    if attach and not (keys_dir or insecure):
        raise click.UsageError("--attach needs --keys-dir (the roles' CURVE keys) or --insecure")
    network = _network(network_name)
    if network is not None and attach:
        raise click.UsageError("--network cannot be emulated for roles started elsewhere (--attach)")
    try:
        dep = load_deployment(deployment)
    except DeploymentError as exc:
        raise click.ClickException(f"--deployment: {exc}")
    from web.page import page_header, serve  # Gradio takes a few seconds to import: after the checks

    if fhe == "simulate":
        click.secho(f"!! {INSECURE}", fg="red", bold=True)
    limits = Limits(tabs, applications_per_tab, dep.manifest["fhe"]["eval_key_bytes"] if fhe == "execute" else 0)
    if save_dir is None:
        data = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
        save_dir = data / "fhe-credit-sim" / "saved"
    save_dir = save_dir.resolve() / f"ui-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    driver = RoleDriver(fhe, str(dep.directory), transport, not insecure, attach, keys_dir, liveness,
                        role_args=limits.role_args(), network=network)
    click.echo(f"starting evaluator, user, bank, agency ({'attached at ' + attach if attach else transport}, "
               f"fhe={fhe}, deployment {dep.name}{', network ' + network.label() if network else ''})")
    if attach:
        args = limits.role_args()
        click.echo(f"attached: the page keeps its {tabs} tabs apart if the evaluator was started with "
                   f"{' '.join(args['evaluator'])} and user, bank, agency with {' '.join(args['user'])}")
    try:
        pids = driver.start()
    except Exception as exc:  # noqa: BLE001 - a role that did not start: say which, stop the others
        raise click.ClickException(f"the roles did not start: {exc}")
    click.echo("all roles ready: " + ", ".join(f"{r}={p}" for r, p in pids.items()))
    try:
        serve(driver, dep, save_dir, port, lambda: page_header(driver, dep, not insecure, attach), limits, click.echo)
    except OSError as exc:  # e.g. the port is taken
        raise click.ClickException(f"--port {port}: {exc}")
    finally:
        codes = driver.stop()
        click.echo("roles stopped: " + ", ".join(f"{r} {driver.ended_by.get(r, '?')}"
                                                 + (f" (exit {c})" if c is not None else "") for r, c in codes.items()))


@cli.command(name="list")
def list_scenarios():
    """List the shipped scenarios with their one-line descriptions."""
    for path in sorted(SCENARIO_DIR.glob("*.yaml")) + sorted(SCENARIO_DIR.glob("*/*.yaml")):
        try:
            scenario = load_scenario(path)
            click.echo(f"{path.relative_to(SCENARIO_DIR.parent)}  {scenario.description}")
        except ScenarioError as exc:
            click.echo(f"{path.name}  (invalid: {exc})")


@cli.command()
@click.option("--data", type=click.Choice(["kaggle", "demo", "synthetic"]), default="kaggle", show_default=True,
              help="Data set, with its committed deployment's settings (the options below override them).")
@click.option("--output", "output_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Deployment directory to (re)write (default: deployment_files/DATA).")
@click.option("--samples", type=click.IntRange(200, 2_000_000), default=None, help="Synthetic applicants to generate.")
@click.option("--depth", type=click.IntRange(1, 12), default=None)
@click.option("--min-leaf", "min_samples_leaf", type=click.IntRange(1, 100_000), default=None)
@click.option("--bits", "n_bits", type=click.IntRange(2, 8), default=None, help="Quantization bit width of inputs.")
@click.option("--seed", type=int, default=None)
@click.option("--fhe-check", type=click.IntRange(1, 1000), default=None,
              help="Held-out applicants run with real FHE while building (each must equal the quantized model).")
@click.option("--application-csv", type=click.Path(dir_okay=False, exists=True), default=None,
              help="Real data: application_record.csv (needs --credit-csv).")
@click.option("--credit-csv", type=click.Path(dir_okay=False, exists=True), default=None,
              help="Real data: credit_record.csv (needs --application-csv).")
@click.option("--model", "family", type=click.Choice(["tree", "xgboost", "logistic"]), default="tree",
              show_default=True, help="Model family; xgboost and logistic (kaggle only) choose their "
              "hyper-parameters by cross-validation grouped by applicant and write deployment_files/kaggle_FAMILY.")
def train(data, output_dir, samples, depth, min_samples_leaf, n_bits, seed, fhe_check, application_csv, credit_csv,
          family):
    """Train a deployment's model on DATA, compile the 3-input circuit and write its directory."""
    from credit_model.deployment import DEPLOYMENTS_DIR
    from credit_model.training.train import train_and_deploy, with_overrides

    if bool(application_csv) != bool(credit_csv):
        raise click.UsageError("--application-csv and --credit-csv go together")
    if family != "tree":
        if data != "kaggle":
            raise click.UsageError("--model xgboost|logistic trains on --data kaggle")
        data = f"kaggle_{family}"
    config = with_overrides(data, samples=samples, max_depth=depth, min_samples_leaf=min_samples_leaf,
                            n_bits=n_bits, seed=seed, fhe_check_samples=fhe_check,
                            application_csv=application_csv, credit_csv=credit_csv)
    output_dir = output_dir or DEPLOYMENTS_DIR / data
    manifest = train_and_deploy(output_dir, config, log=click.echo)
    fhe, timings = manifest["fhe"], manifest["timings"]
    click.echo(f"wrote {output_dir}: eval key {fhe['eval_key_bytes'] / 1e6:.1f} MB, "
               f"keygen {timings['keygen_s']} s, run {timings['run_s_median']} s")


if __name__ == "__main__":
    from protocol.settings import end_process_with
    end_process_with(cli)  # the exit status survives Concrete's exit hook (see end_process_with)
