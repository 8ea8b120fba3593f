"""Check that every function ``sam build`` built imports on the Lambda runtime's Python.

For each function the built template declares, a fresh interpreter (``python3.12 -S``: the standard
library and nothing from the machine's site-packages) imports the handler with ``sys.path``
laid out as Lambda lays it out: the function's folder (``/var/task``), each of its layers
(``/opt/python``, ``/opt/python/lib/python3.12/site-packages``) and what the runtime itself provides
(``/var/runtime``: boto3 and its dependencies, passed as ``--runtime-dir``).  The environment is
Lambda's reserved variables plus the function's own, resolved as ``sam local invoke`` resolves them:
literal values from the template, intrinsic ones empty unless ``--env-vars`` (``events/env.json``)
gives them.

Native code only loads on the machine's own architecture, so the built native code (every ELF file of
each function and its layers) is first checked against what Lambda will load it on: the function's
architecture (ELF machine), the symbol versions of the python3.12 runtime's system libraries (glibc 2.34,
GCC 11's libstdc++: Amazon Linux 2023), and Lambda's 250 MB limit on a function and its layers
unzipped.  When the build holds extension modules for another architecture than the host's (an arm64
build on an x86_64 machine), the imports are then checked on a second build for the host's
architecture (``sam build --parameter-overrides Architecture=<host>``, and ``LAYER_ARCH=<host>`` for
the layers' makefile builds, which SAM does not tell their architecture), and the script says so.

``--layer-test LAYER=SCRIPT`` runs a layer's own test (``layers/imaging/selftest.py``) with that layer
alone on the path, in the build the imports are checked on: imports prove little for a layer whose
handlers import its packages lazily.

Run by ``make template`` with the tools' interpreter (it needs PyYAML, which aws-sam-cli brings).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import struct
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
#: The newest symbol versions the python3.12 runtime's system libraries define (Amazon Linux 2023:
#: glibc 2.34, libstdc++ of GCC 11).
RUNTIME_SYMBOL_VERSIONS = {"GLIBC": (2, 34), "GLIBCXX": (3, 4, 29), "CXXABI": (1, 3, 13)}
#: Lambda's quota on a function and all its layers, unzipped.
MAX_UNZIPPED_BYTES = 250 * 1024 * 1024
_SHT_GNU_VERNEED = 0x6FFFFFFE
_SYMBOL_VERSION = re.compile(r"([A-Z]+)_(\d+(?:\.\d+)*)")


@dataclass(frozen=True)
class BuiltFunction:
    """One function of the built template, with the folders Lambda would put on ``sys.path``."""

    logical_id: str
    handler: str
    architecture: str
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


def layer_path_dirs(build_dir: Path, resources: Mapping[str, Any], logical_id: str) -> Iterator[Path]:
    """The folders of a built layer that Lambda puts on ``sys.path``."""
    if resources.get(logical_id, {}).get("Type") != "AWS::Serverless::LayerVersion":
        raise SystemExit(f"{logical_id} is not a layer of {build_dir}/template.yaml")
    root = build_dir / resources[logical_id]["Properties"]["ContentUri"]
    for sub in ("python", "python/lib/python3.12/site-packages"):
        if (root / sub).is_dir():
            yield root / sub


def _layer_dirs(build_dir: Path, resources: Mapping[str, Any], layers: list[Any]) -> Iterator[Path]:
    for layer in layers:
        if not (isinstance(layer, dict) and set(layer) == {"Ref"} and layer["Ref"] in resources):
            raise SystemExit(f"layer {layer!r} is not built from this template; cannot check it")
        yield from layer_path_dirs(build_dir, resources, layer["Ref"])


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
        architectures = properties.get("Architectures", globals_.get("Architectures", ["x86_64"]))
        functions.append(
            BuiltFunction(
                logical_id=logical_id,
                handler=handler,
                architecture=_literal(document, architectures[0], overrides),
                code_dir=build_dir / properties["CodeUri"],
                layer_dirs=tuple(_layer_dirs(build_dir, resources, properties.get("Layers", []))),
                environment=environment,
            )
        )
    if not functions:
        raise SystemExit(f"{build_dir}/template.yaml declares no function")
    return functions


def elf_files(function: BuiltFunction) -> Iterator[tuple[Path, bytes]]:
    """Every ELF file (extension modules, bundled libraries) of the function and its layers."""
    for directory in function.path_dirs:
        for path in sorted(directory.rglob("*.so*")):
            if path.is_file() and not path.is_symlink():
                with path.open("rb") as file:
                    if file.read(4) == b"\x7fELF":
                        yield path, path.read_bytes()


def elf_architecture(data: bytes) -> str:
    machine = int.from_bytes(data[18:20], "little" if data[5] == 1 else "big")
    return _ELF_MACHINES.get(machine, "unknown")


def required_symbol_versions(data: bytes) -> set[str]:
    """The symbol versions an ELF file needs from other libraries (its ``.gnu.version_r``).

    64-bit little-endian only, like both of Lambda's architectures.
    """
    if data[4] != 2 or data[5] != 1:
        return {"(not a 64-bit little-endian ELF file)"}
    shoff, (shentsize, shnum) = struct.unpack_from("<Q", data, 0x28)[0], struct.unpack_from("<HH", data, 0x3A)
    # sh_name, sh_type, sh_flags, sh_addr, sh_offset, sh_size, sh_link, sh_info, sh_addralign, sh_entsize
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    versions = set()
    for section in sections:
        if section[1] != _SHT_GNU_VERNEED:
            continue
        strings, offset = sections[section[6]][4], section[4]
        for _ in range(section[7]):  # sh_info: the number of Verneed entries
            _version, count, _file, aux, following = struct.unpack_from("<HHIII", data, offset)
            entry = offset + aux
            for _ in range(count):
                _hash, _flags, _other, name, next_aux = struct.unpack_from("<IHHII", data, entry)
                start = strings + name
                versions.add(data[start : data.index(b"\0", start)].decode())
                entry += next_aux
            offset += following
    return versions


def too_new(versions: set[str]) -> list[str]:
    """The symbol versions newer than the runtime's system libraries define."""
    newer = []
    for version in sorted(versions):
        match = _SYMBOL_VERSION.fullmatch(version)
        if match is None or match[1] not in RUNTIME_SYMBOL_VERSIONS:
            continue
        if tuple(int(part) for part in match[2].split(".")) > RUNTIME_SYMBOL_VERSIONS[match[1]]:
            newer.append(version)
    return newer


def foreign_native_code(function: BuiltFunction, host: str) -> list[Path]:
    """Extension modules (ELF shared objects) built for another architecture than the host's."""
    return [path for path, data in elf_files(function) if elf_architecture(data) != host]


def check_native_code(functions: list[BuiltFunction]) -> bool:
    """Each function's native code is for its architecture and loads on the python3.12 runtime."""
    ok = True
    say("Native code, against each function's architecture and the python3.12 runtime:")
    for function in functions:
        problems, count = [], 0
        for path, data in elf_files(function):
            count += 1
            if elf_architecture(data) != function.architecture:
                problems.append(f"{path} is for {elf_architecture(data)}")
            problems.extend(f"{path} needs {version}" for version in too_new(required_symbol_versions(data)))
        size = sum(f.stat().st_size for d in function.path_dirs for f in d.rglob("*") if f.is_file())
        if size > MAX_UNZIPPED_BYTES:
            problems.append(f"{size / 2**20:.0f} MiB unzipped with its layers (Lambda allows 250 MiB)")
        if problems:
            ok = False
            say(f"  FAIL  {function.logical_id} ({function.architecture}):")
            for problem in problems:
                say(f"          {problem}")
        else:
            say(
                f"  ok    {function.logical_id}: {count} ELF files for {function.architecture}, "
                f"{size / 2**20:.1f} MiB with its layers"
            )
    return ok


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
    # sam build runs pip with the python3.12 it finds first on PATH; SAM does not tell a makefile build
    # its architecture, so the layers' Makefiles read LAYER_ARCH.
    path = os.pathsep.join([str(Path(python).parent), os.environ.get("PATH", "")])
    env = {**os.environ, "PATH": path, "SAM_CLI_TELEMETRY": "0", "LAYER_ARCH": host}
    if subprocess.run(command, cwd=workdir, env=env, check=False).returncode != 0:  # noqa: S603 - the tools' sam
        raise SystemExit(f"sam build for {host} failed")


def run_layer_tests(tests: list[str], build_dir: Path, python: str) -> bool:
    """Each ``LAYER=SCRIPT``: the script, with that built layer alone on the path, exits 0."""
    resources = load_built_template(build_dir / "template.yaml").get("Resources", {})
    ok = True
    for test in tests:
        logical_id, _, script = test.partition("=")
        dirs = list(layer_path_dirs(build_dir, resources, logical_id))
        started = time.perf_counter()
        result = subprocess.run(  # noqa: S603 - our own interpreter and script
            [python, "-S", str(Path(script).resolve())],
            env={
                "PATH": "/usr/local/bin:/usr/bin:/bin",
                "LANG": "en_US.UTF-8",
                "PYTHONPATH": os.pathsep.join(str(d.resolve()) for d in dirs),
            },
            capture_output=True,
            text=True,
            check=False,
        )
        elapsed = time.perf_counter() - started
        output = (result.stdout + result.stderr).rstrip()
        if result.returncode == 0:
            say(f"  ok    {logical_id}: {script} ({elapsed * 1000:.0f} ms): {output}")
        else:
            ok = False
            say(f"  FAIL  {logical_id}: {script}\n{output}")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build-dir", type=Path, default=Path(".aws-sam/build"))
    parser.add_argument("--template", type=Path, default=Path("template.yaml"), help="the source template")
    parser.add_argument("--python", required=True, help="the runtime's interpreter (python3.12)")
    parser.add_argument("--runtime-dir", type=Path, required=True, help="what the runtime provides (boto3)")
    parser.add_argument("--env-vars", type=Path, help="sam local invoke's --env-vars file")
    parser.add_argument("--sam", default="sam", help="sam, for a build for the host's architecture")
    parser.add_argument(
        "--layer-test",
        action="append",
        default=[],
        metavar="LAYER=SCRIPT",
        help="run SCRIPT with the built LAYER alone on the path (repeatable)",
    )
    args = parser.parse_args(argv)

    env_vars = json.loads(args.env_vars.read_text(encoding="utf-8")) if args.env_vars else {}
    host = host_architecture()
    functions = built_functions(args.build_dir, env_vars, {})
    native_ok = check_native_code(functions)
    checked_build = args.build_dir
    foreign = {f.logical_id: foreign_native_code(f, host) for f in functions}
    if any(foreign.values()):
        for logical_id, paths in foreign.items():
            for path in paths[:3]:
                say(f"{logical_id}: {path} is not for this {host} machine")
        checked_build = args.build_dir.parent / f"host-{host}" / "build"
        say(
            f"The build holds native code for another architecture than this machine's ({host}); "
            f"checking the imports on a build for {host} in {checked_build} instead."
        )
        build_for_host(args.sam, args.python, host, args.template, checked_build)
        functions = built_functions(checked_build, env_vars, {"Architecture": host})
        if any(foreign_native_code(f, host) for f in functions):
            raise SystemExit(f"the {host} build still holds native code for another architecture")
    else:
        say(f"{args.build_dir}: no native code for another architecture than this machine's ({host}).")

    say(f"Importing each handler in a fresh {args.python} -S, laid out as on Lambda:")
    imports_ok = check_imports(functions, args.python, args.runtime_dir)
    layers_ok = True
    if args.layer_test:
        say(f"Testing layers of {checked_build} in a fresh {args.python} -S, each alone on the path:")
        layers_ok = run_layer_tests(args.layer_test, checked_build, args.python)
    return 0 if native_ok and imports_ok and layers_ok else 1


if __name__ == "__main__":
    sys.exit(main())
