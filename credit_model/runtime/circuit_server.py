"""The deployed circuit at the evaluator, compiled from its stored MLIR with concrete.compiler alone (no concrete.fhe)."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Sequence

from concrete.compiler import (
    Backend, CompilationOptions, Compiler, OptimizerMultiParameterStrategy, OptimizerStrategy, ServerKeyset,
    ServerProgram, TransportValue,
)
from concrete.compiler.utils import lookup_runtime_lib

MAX_SERVER_ZIP_BYTES = 16 << 20
STRATEGIES = {"v0": OptimizerStrategy.V0, "mono": OptimizerStrategy.DAG_MONO, "multi": OptimizerStrategy.DAG_MULTI}
MULTI_STRATEGIES = {"precision": OptimizerMultiParameterStrategy.PRECISION,
                    "precision_and_norm2": OptimizerMultiParameterStrategy.PRECISION_AND_NORM2}


def _enum(entry, what: str) -> str:
    """The value of an enum as concrete-python's configuration.json stores it ({"py/reduce": [..., [value]]})."""
    try:
        return str(entry["py/reduce"][1]["py/tuple"][0])
    except (KeyError, IndexError, TypeError):
        raise ValueError(f"configuration.json: unexpected {what} {json.dumps(entry)[:80]}") from None


def compilation_options(config: dict, simulate: bool) -> CompilationOptions:
    """The options concrete-python's Server.create builds from a saved configuration (CPU, no dataflow)."""
    if config.get("use_gpu") or config.get("dataflow_parallelize") or config.get("auto_parallelize"):
        raise ValueError("GPU and dataflow parallelisation are not supported by this evaluator")
    options = CompilationOptions(Backend.CPU)
    options.simulation(simulate)
    options.set_loop_parallelize(bool(config["loop_parallelize"]))
    options.set_dataflow_parallelize(False)
    options.set_auto_parallelize(False)
    options.set_compress_evaluation_keys(bool(config["compress_evaluation_keys"]))
    options.set_compress_input_ciphertexts(bool(config["compress_input_ciphertexts"]))
    options.set_enable_overflow_detection_in_simulation(bool(config["detect_overflow_in_simulation"]))
    options.set_composable(bool(config["composable"]))
    global_p, p = config.get("global_p_error"), config.get("p_error")
    if global_p is None and p is None:
        raise ValueError("configuration.json sets neither p_error nor global_p_error")
    options.set_global_p_error(float(global_p) if global_p is not None else 1.0)
    options.set_p_error(float(p) if p is not None else 1.0)
    options.set_display_optimizer_choice(False)
    options.set_optimizer_strategy(STRATEGIES[_enum(config["parameter_selection_strategy"], "strategy")])
    options.set_optimizer_multi_parameter_strategy(
        MULTI_STRATEGIES[_enum(config["multi_parameter_strategy"], "multi-parameter strategy")])
    options.set_enable_tlu_fusing(bool(config["enable_tlu_fusing"]))
    options.set_print_tlu_fusing(False)
    if config.get("keyset_restriction") or config.get("range_restriction"):
        raise ValueError("keyset and range restrictions are not supported by this evaluator")
    options.set_security_level(int(_enum(config["security_level"], "security level")))
    return options


def _program(info_json: bytes) -> dict:
    program = json.loads(info_json)
    program.pop("tfhers_specs", None)
    return program


class CircuitServer:
    """Runs the deployment's circuit on serialized party ciphertexts with a deserialized evaluation key.

    The MLIR stored in server.zip is compiled into `build_dir` (0.2-0.3 s); the compiled program's info
    must equal the client's (client.zip), key set included, or the deployment is refused: a key set the
    evaluator expects must be exactly the one the user generates.
    """

    def __init__(self, deployment_dir: Path | str, simulate: bool = False, build_dir: Path | None = None):
        directory = Path(deployment_dir)
        archive_path = directory / ("server_simulate.zip" if simulate else "server.zip")
        if archive_path.stat().st_size > MAX_SERVER_ZIP_BYTES:
            raise ValueError(f"{archive_path} is larger than {MAX_SERVER_ZIP_BYTES} bytes")
        with zipfile.ZipFile(archive_path) as archive:
            mlir = archive.read("circuit.mlir").decode("utf-8")
            config = json.loads(archive.read("configuration.json"))
            stored_simulate = archive.read("is_simulated").decode() == "1"
            rules = json.loads(archive.read("composition_rules.json"))
        with zipfile.ZipFile(directory / "client.zip") as archive:
            client_program = _program(archive.read("client.specs.json"))
        if stored_simulate != simulate or rules:
            raise ValueError(f"{archive_path}: simulation {stored_simulate} (wanted {simulate}), "
                             f"composition rules {rules!r} (none supported)")
        self._own_dir = build_dir is None
        self.build_dir = Path(tempfile.mkdtemp(prefix="fcs-circuit-")) if build_dir is None else Path(build_dir)
        self.build_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        start = time.perf_counter()
        compiler = Compiler(str(self.build_dir), lookup_runtime_lib(), generate_shared_lib=True,
                            generate_program_info=True, generate_compilation_feedback=True)
        library = compiler.compile(mlir, compilation_options(config, simulate))
        self.compile_seconds = time.perf_counter() - start
        compiled = _program(library.get_program_info().serialize())
        if compiled != client_program:
            raise ValueError(f"{archive_path} compiles to a program whose keys or circuit differ from client.zip's: "
                             "the deployment is inconsistent; regenerate it with `run_scenario.py train`")
        self.simulate = simulate
        self.function_name = client_program["circuits"][0]["name"]
        self.circuit = ServerProgram(library, simulate).get_server_circuit(self.function_name)
        self.arity = len(client_program["circuits"][0]["inputs"])

    @staticmethod
    def load_keys(blob: bytes) -> ServerKeyset:
        """Deserialize an evaluation key (raises ValueError when it does not deserialize)."""
        return _deserialize(ServerKeyset, blob, "evaluation key")

    @staticmethod
    def load_value(blob: bytes) -> TransportValue:
        """Deserialize a ciphertext (raises ValueError when it does not deserialize)."""
        return _deserialize(TransportValue, blob, "ciphertext")

    def run_parties(self, inputs: Sequence[bytes], evaluation_keys: ServerKeyset | None) -> bytes:
        """Run the circuit on (user, bank, agency) serialized ciphertexts; the serialized output."""
        if len(inputs) != self.arity:
            raise ValueError(f"the circuit takes {self.arity} inputs, got {len(inputs)}")
        values = [self.load_value(blob) for blob in inputs]
        if self.simulate:
            results = self.circuit.simulate(values)
        else:
            if evaluation_keys is None:
                raise ValueError("a run needs the evaluation key")
            results = self.circuit.call(values, evaluation_keys)
        return results[0].serialize()

    def close(self) -> None:
        if self._own_dir:
            shutil.rmtree(self.build_dir, ignore_errors=True)


def _deserialize(kind, blob: bytes, what: str):
    try:
        return kind.deserialize(bytes(blob))
    except RuntimeError as exc:
        raise ValueError(f"{what} does not deserialize: {exc}") from None
