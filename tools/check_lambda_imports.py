"""Check that every function ``sam build`` built imports on the Lambda runtime's Python.

For each function the built template declares, a fresh interpreter (``python3.12 -S``: the standard
library and nothing from the machine's site-packages) imports the handler with ``sys.path``
laid out as Lambda lays it out: the function's folder (``/var/task``), each of its layers
(``/opt/python``, ``/opt/python/lib/python3.12/site-packages``) and what the runtime itself provides
(``/var/runtime``: boto3 and its dependencies, passed as ``--runtime-dir``).  The environment is
Lambda's reserved variables plus the function's own, resolved as ``sam local invoke`` resolves them:
literal values from the template, intrinsic ones empty unless ``--env-vars`` (``events/env.json``)
gives them.

Native code only loads on the machine's own architecture.  When the build holds extension modules
for another one (an arm64 build on an x86_64 machine), the build itself already proved that the
dependencies exist for the target; the imports are then checked on a second build for the host's
architecture (``sam build --parameter-overrides Architecture=<host>``), and the script says so.

Run by ``make template`` with the tools' interpreter (it needs PyYAML, which aws-sam-cli brings).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

#: ELF ``e_machine`` values of Lambda's two architectures.
_ELF_MACHINES = {0x3E: "x86_64", 0xB7: "arm64"}
_HOST_ARCHITECTURES = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "arm64", "arm64": "arm64"}


@dataclass(frozen=True)
class BuiltFunction:
    """One function of the built template, with the folders Lambda would put on ``sys.path``."""

    logical_id: str
    handler: str
    code_dir: Path
    layer_dirs: tuple[Path, ...]
    environment: dict[str, str]

    @property
    def path_dirs(self) -> list[Path]:
        return [self.code_dir, *self.layer_dirs]

    @property
    def import_statement(self) -> str:
        module, _, name = self.handler.rpartition(".")
        return f"from {module} import {name}"


def say(message: str) -> None:
    sys.stdout.write(message + "\n")
    sys.stdout.flush()


def host_architecture() -> str:
    machine = platform.machine().lower()
    if machine not in _HOST_ARCHITECTURES:
        raise SystemExit(f"unsupported host architecture {machine!r}")
    return _HOST_ARCHITECTURES[machine]


def load_built_template(path: Path) -> dict[str, Any]:
    # `sam build` writes intrinsics in their long form (Ref:, Fn::Sub:), which safe_load reads.
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(document, dict):
        raise SystemExit(f"{path}: not a template")
    return document


def _literal(document: Mapping[str, Any], value: Any, overrides: Mapping[str, str]) -> str:
    """A variable's value as ``sam local invoke`` passes it.

    Scalars as text, a ``Ref`` to a parameter as the parameter's value, other intrinsics empty.
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    if isinstance(value, dict) and set(value) == {"Ref"} and value["Ref"] in document.get("Parameters", {}):
        return _parameter_value(document, value["Ref"], overrides)
    return ""


def _parameter_value(document: Mapping[str, Any], name: str, overrides: Mapping[str, str]) -> str:
    if name in overrides:
        return overrides[name]
    parameter = document.get("Parameters", {}).get(name)
    if parameter is None or "Default" not in parameter:
        raise SystemExit(f"parameter {name} has no default and no override")
    return str(parameter["Default"])


def _layer_dirs(build_dir: Path, resources: Mapping[str, Any], layers: list[Any]) -> Iterator[Path]:
    for layer in layers:
        if not (isinstance(layer, dict) and set(layer) == {"Ref"} and layer["Ref"] in resources):
            raise SystemExit(f"layer {layer!r} is not built from this template; cannot check it")
        content = resources[layer["Ref"]]["Properties"]["ContentUri"]
        root = build_dir / content
        for sub in ("python", "python/lib/python3.12/site-packages"):
            if (root / sub).is_dir():
                yield root / sub


def built_functions(
    build_dir: Path, env_vars: Mapping[str, Mapping[str, str]], overrides: Mapping[str, str]
) -> list[BuiltFunction]:
    document = load_built_template(build_dir / "template.yaml")
    resources = document.get("Resources", {})
    globals_ = document.get("Globals", {}).get("Function", {})
    global_variables = globals_.get("Environment", {}).get("Variables", {})
    functions = []
    for logical_id, resource in resources.items():
        if resource.get("Type") != "AWS::Serverless::Function":
            continue
        properties = resource["Properties"]
        if properties.get("PackageType", "Zip") != "Zip":
            raise SystemExit(f"{logical_id}: only zip functions can be checked")
        declared = {**global_variables, **properties.get("Environment", {}).get("Variables", {})}
        given = {**env_vars.get("Parameters", {}), **env_vars.get(logical_id, {})}
        environment = {
            name: str(given[name]) if name in given else _literal(document, value, overrides)
            for name, value in declared.items()
        }
        handler = properties.get("Handler", globals_.get("Handler"))
        functions.append(
            BuiltFunction(
                logical_id=logical_id,
                handler=handler,
                code_dir=build_dir / properties["CodeUri"],
                layer_dirs=tuple(_layer_dirs(build_dir, resources, properties.get("Layers", []))),
                environment=environment,
            )
        )
    if not functions:
        raise SystemExit(f"{build_dir}/template.yaml declares no function")
    return functions


def foreign_native_code(function: BuiltFunction, host: str) -> list[Path]:
    """Extension modules (ELF shared objects) built for another architecture than the host's."""
    foreign = []
    for directory in function.path_dirs:
        for path in directory.rglob("*.so*"):
            if not path.is_file():
                continue
            with path.open("rb") as file:
                header = file.read(20)
            if header[:4] != b"\x7fELF":
                continue
            byteorder = "little" if header[5] == 1 else "big"
            machine = _ELF_MACHINES.get(int.from_bytes(header[18:20], byteorder), "unknown")
            if machine != host:
                foreign.append(path)
    return foreign


def lambda_environment(function: BuiltFunction, runtime_dir: Path) -> dict[str, str]:
    """What Lambda sets, then the function's own variables, as a fresh process would see them."""
    path = [*function.path_dirs, runtime_dir]
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "en_US.UTF-8",
        "TZ": ":UTC",
        "PYTHONPATH": os.pathsep.join(str(directory.resolve()) for directory in path),
        "LAMBDA_TASK_ROOT": str(function.code_dir.resolve()),
        "LAMBDA_RUNTIME_DIR": str(runtime_dir.resolve()),
        "_HANDLER": function.handler,
        "AWS_EXECUTION_ENV": "AWS_Lambda_python3.12",
        "AWS_LAMBDA_FUNCTION_NAME": function.logical_id,
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512",
        "AWS_LAMBDA_LOG_FORMAT": "JSON",
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{function.logical_id}",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_XRAY_CONTEXT_MISSING": "LOG_ERROR",
        **function.environment,
    }


def check_imports(functions: list[BuiltFunction], python: str, runtime_dir: Path) -> bool:
    ok = True
    for function in functions:
        started = time.perf_counter()
        result = subprocess.run(  # noqa: S603 - our own interpreter and module names
            [python, "-S", "-c", function.import_statement],
            cwd=function.code_dir,
            env=lambda_environment(function, runtime_dir),
            capture_output=True,
            text=True,
            check=False,
        )
        elapsed = time.perf_counter() - started
        if result.returncode == 0:
            say(f"  ok    {function.logical_id}: {function.import_statement} ({elapsed * 1000:.0f} ms)")
        else:
            ok = False
            say(f"  FAIL  {function.logical_id}: {function.import_statement}\n{result.stderr.rstrip()}")
    return ok


def build_for_host(sam: str, python: str, host: str, template: Path, build_dir: Path) -> None:
    """``sam build`` for the host's architecture, in a folder of its own.

    sam keeps its cache index (``build.toml``) beside the build folder and its dependency cache in
    ``.aws-sam/deps`` under the working directory, and prunes what the current build does not use:
    run from the same place, this build and the main one would evict each other's caches.
    """
    workdir = build_dir.parent
    workdir.mkdir(parents=True, exist_ok=True)
    executable = shutil.which(sam)
    if executable is None:
        raise SystemExit(f"{sam} not found")
    command = [
        str(Path(executable).resolve()),
        "build",
        "--template-file",
        str(template.resolve()),
        "--build-dir",
        build_dir.name,
        "--cache-dir",
        "cache",
        "--cached",
        "--parallel",
        "--parameter-overrides",
        f"Architecture={host}",
    ]
    say(f"$ (cd {workdir} && {' '.join(command)})")
    # sam build runs pip with the python3.12 it finds first on PATH.
    path = os.pathsep.join([str(Path(python).parent), os.environ.get("PATH", "")])
    env = {**os.environ, "PATH": path, "SAM_CLI_TELEMETRY": "0"}
    if subprocess.run(command, cwd=workdir, env=env, check=False).returncode != 0:  # noqa: S603 - the tools' sam
        raise SystemExit(f"sam build for {host} failed")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build-dir", type=Path, default=Path(".aws-sam/build"))
    parser.add_argument("--template", type=Path, default=Path("template.yaml"), help="the source template")
    parser.add_argument("--python", required=True, help="the runtime's interpreter (python3.12)")
    parser.add_argument("--runtime-dir", type=Path, required=True, help="what the runtime provides (boto3)")
    parser.add_argument("--env-vars", type=Path, help="sam local invoke's --env-vars file")
    parser.add_argument("--sam", default="sam", help="sam, for a build for the host's architecture")
    args = parser.parse_args(argv)

    env_vars = json.loads(args.env_vars.read_text(encoding="utf-8")) if args.env_vars else {}
    host = host_architecture()
    functions = built_functions(args.build_dir, env_vars, {})
    foreign = {f.logical_id: foreign_native_code(f, host) for f in functions}
    if any(foreign.values()):
        for logical_id, paths in foreign.items():
            for path in paths[:5]:
                say(f"{logical_id}: {path} is not for this {host} machine")
        host_build = args.build_dir.parent / f"host-{host}" / "build"
        say(
            f"The build holds native code for another architecture than this machine's ({host}); "
            f"checking the imports on a build for {host} in {host_build} instead."
        )
        build_for_host(args.sam, args.python, host, args.template, host_build)
        functions = built_functions(host_build, env_vars, {"Architecture": host})
        if any(foreign_native_code(f, host) for f in functions):
            raise SystemExit(f"the {host} build still holds native code for another architecture")
    else:
        say(f"{args.build_dir}: no native code for another architecture than this machine's ({host}).")

    say(f"Importing each handler in a fresh {args.python} -S, laid out as on Lambda:")
    return 0 if check_imports(functions, args.python, args.runtime_dir) else 1


if __name__ == "__main__":
    sys.exit(main())
