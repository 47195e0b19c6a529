#!/usr/bin/env python3
"""Compiles contracts/src/*.sol into contracts/artifacts/<ContractName>.json.

solc-js (npm `solc`, pinned in package-lock.json and installed by bin/setup) runs through
`node contracts/compile.cjs` on standard JSON input with fixed settings, so the same
sources always give the same bytes: the artifacts are committed and `--check` proves they
match the sources (a test runs it).

    python contracts/build.py              # rebuild contracts/artifacts/
    python contracts/build.py --out DIR    # build elsewhere
    python contracts/build.py --check      # rebuild into a temp dir, compare; exit 1 on a difference
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

CONTRACTS_DIR = Path(__file__).resolve().parent
SOURCES_DIR = CONTRACTS_DIR / "src"
DEFAULT_OUT_DIR = CONTRACTS_DIR / "artifacts"
COMPILE_SCRIPT = CONTRACTS_DIR / "compile.cjs"
SOLC_VERSION = "0.8.30"
COMPILE_TIMEOUT_S = 600
MAX_SOURCES = 100

# Every setting that changes the output bytes is fixed here; nothing comes from the environment.
SETTINGS: dict[str, Any] = {
    "optimizer": {"enabled": True, "runs": 200},
    "evmVersion": "cancun",
    # No IPFS/Swarm hash of the metadata in the bytecode: it would change with any comment.
    "metadata": {"bytecodeHash": "none"},
    "outputSelection": {"*": {"*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"]}},
}


def standard_input(sources_dir: Path) -> dict[str, Any]:
    """solc standard JSON with every source under its path relative to contracts/, sorted."""
    paths = sorted(sources_dir.glob("*.sol"))
    assert 0 < len(paths) <= MAX_SOURCES, f"expected 1..{MAX_SOURCES} sources in {sources_dir}, found {len(paths)}"
    sources = {f"src/{path.name}": {"content": path.read_text(encoding="utf-8")} for path in paths}
    return {"language": "Solidity", "sources": sources, "settings": SETTINGS}


def run_solc(solc_input: dict[str, Any]) -> dict[str, Any]:
    node = shutil.which("node")
    if node is None:
        raise SystemExit("build.py: node is required (Node.js >= 18; bin/setup installs solc into node_modules)")
    completed = subprocess.run(  # noqa: S603 (our script, our arguments)
        [node, str(COMPILE_SCRIPT)],
        input=json.dumps(solc_input),
        capture_output=True,
        text=True,
        timeout=COMPILE_TIMEOUT_S,
        check=False,
    )
    if completed.returncode != 0:
        raise SystemExit(f"build.py: solc-js failed ({completed.returncode}):\n{completed.stderr[-4000:]}")
    output: dict[str, Any] = json.loads(completed.stdout)
    version = str(output.get("compilerVersion", ""))
    if not version.startswith(SOLC_VERSION + "+"):
        raise SystemExit(f"build.py: solc {SOLC_VERSION} required, node_modules has {version!r}: run bin/setup")
    return output


def check_diagnostics(output: dict[str, Any]) -> None:
    """Errors stop the build; warnings are printed (the sources are kept warning-free)."""
    errors = []
    for diagnostic in output.get("errors", []):
        message = diagnostic.get("formattedMessage") or diagnostic.get("message", "")
        if diagnostic.get("severity") == "error":
            errors.append(message)
        else:
            print(message, file=sys.stderr)
    if errors:
        raise SystemExit("build.py: compilation failed:\n" + "\n".join(errors))


def artifacts(output: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """One artifact per deployable contract (interfaces and abstract contracts have no bytecode)."""
    found: dict[str, dict[str, Any]] = {}
    for source in sorted(output.get("contracts", {})):
        for name, compiled in sorted(output["contracts"][source].items()):
            bytecode = compiled["evm"]["bytecode"]["object"]
            if not bytecode:
                continue
            if name in found:
                raise SystemExit(f"build.py: two contracts named {name}: artifact names must be unique")
            found[name] = {
                "contractName": name,
                "abi": compiled["abi"],
                "bytecode": "0x" + bytecode,
                "deployedBytecode": "0x" + compiled["evm"]["deployedBytecode"]["object"],
            }
    return found


def render(artifact: dict[str, Any]) -> str:
    return json.dumps(artifact, sort_keys=True, indent=2) + "\n"


def build(out_dir: Path) -> list[Path]:
    """Compiles and writes the artifacts into `out_dir`, removing artifacts of contracts
    that no longer exist; returns the written paths."""
    output = run_solc(standard_input(SOURCES_DIR))
    check_diagnostics(output)
    built = artifacts(output)
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob("*.json"):
        if stale.stem not in built:
            stale.unlink()
    written = []
    for name, artifact in built.items():
        path = out_dir / f"{name}.json"
        path.write_text(render(artifact), encoding="utf-8", newline="\n")
        written.append(path)
    return written


def differences(expected_dir: Path, actual_dir: Path) -> list[str]:
    expected = {p.name: p.read_bytes() for p in expected_dir.glob("*.json")}
    actual = {p.name: p.read_bytes() for p in actual_dir.glob("*.json")}
    problems = [f"missing from {expected_dir}: {name}" for name in sorted(actual.keys() - expected.keys())]
    problems += [f"not produced by the sources: {name}" for name in sorted(expected.keys() - actual.keys())]
    problems += [
        f"differs: {name}" for name in sorted(expected.keys() & actual.keys()) if expected[name] != actual[name]
    ]
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Compile contracts/src into reproducible JSON artifacts.")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT_DIR, help="artifact directory")
    parser.add_argument("--check", action="store_true", help="rebuild into a temp dir and compare with --out")
    args = parser.parse_args(argv)
    if not args.check:
        written = build(args.out)
        print(f"build.py: wrote {len(written)} artifacts to {args.out}")
        return 0
    with tempfile.TemporaryDirectory(prefix="stablegate-contracts-") as temp:
        build(Path(temp))
        problems = differences(args.out, Path(temp))
    for problem in problems:
        print(f"build.py --check: {problem}", file=sys.stderr)
    if problems:
        print("build.py --check: artifacts are stale; run `python contracts/build.py`", file=sys.stderr)
        return 1
    print(f"build.py --check: {args.out} matches the sources")
    return 0


if __name__ == "__main__":
    sys.exit(main())
