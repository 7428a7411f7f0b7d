"""Command line of fhe-credit-sim: run and validate scenarios, list them, train the model."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from credit_model.deployment import DEFAULT_DIR


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Privacy-preserving credit-card approval with FHE, as four ZeroMQ processes."""


@cli.command()
@click.option("--output", "output_dir", type=click.Path(file_okay=False, path_type=Path),
              default=DEFAULT_DIR, show_default=True, help="Deployment directory to (re)write.")
@click.option("--samples", type=click.IntRange(200, 2_000_000), default=8000, show_default=True,
              help="Synthetic applicants to generate.")
@click.option("--depth", type=click.IntRange(1, 12), default=5, show_default=True)
@click.option("--bits", "n_bits", type=click.IntRange(2, 8), default=4, show_default=True,
              help="Quantization bit width of inputs.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--fhe-check", type=click.IntRange(1, 1000), default=10, show_default=True,
              help="Held-out applicants run with real FHE while building.")
@click.option("--application-csv", type=click.Path(dir_okay=False, exists=True), default=None,
              help="Real data: application_record.csv (needs --credit-csv).")
@click.option("--credit-csv", type=click.Path(dir_okay=False, exists=True), default=None,
              help="Real data: credit_record.csv (needs --application-csv).")
def train(output_dir, samples, depth, n_bits, seed, fhe_check, application_csv, credit_csv):
    """Train the monotone tree, compile the 3-input circuit and write deployment files."""
    from credit_model.training import TrainingConfig, train_and_deploy

    if bool(application_csv) != bool(credit_csv):
        raise click.UsageError("--application-csv and --credit-csv go together")
    config = TrainingConfig(samples=samples, max_depth=depth, n_bits=n_bits, seed=seed,
                            fhe_check_samples=fhe_check, application_csv=application_csv,
                            credit_csv=credit_csv)
    manifest = train_and_deploy(output_dir, config, log=click.echo)
    fhe = manifest["fhe"]
    click.echo(f"wrote {output_dir}: eval key {fhe['eval_key_bytes'] / 1e6:.1f} MB, "
               f"keygen {fhe['keygen_s']} s, run {fhe['run_s_median']} s")


if __name__ == "__main__":
    sys.exit(cli())
