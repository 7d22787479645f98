"""Build hook: generates the gRPC stubs from the service's proto at build time.

`storagegrants.v1` (grants_pb2, its .pyi types, and grants_pb2_grpc) is not checked in:
building the package (`pip install`, `python -m build`) compiles
proto/storagegrants/v1/grants.proto with the protoc bundled in grpcio-tools (pinned in
pyproject.toml) straight into the build directory, so the installed stubs always match
the proto they were built from.

The proto is looked for in `proto/` beside this file (an sdist carries it there) and
then in the repository's `proto/` two levels up.
"""

from __future__ import annotations

import importlib.resources
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

HERE = Path(__file__).resolve().parent
PROTO_FILE = "storagegrants/v1/grants.proto"


def proto_root() -> Path:
    for candidate in (HERE / "proto", HERE.parent.parent / "proto"):
        if (candidate / PROTO_FILE).is_file():
            return candidate
    raise SystemExit(f"storage-grants-client: {PROTO_FILE} not found in {HERE / 'proto'} or the repository's proto/")


def generate_stubs(out: Path) -> list[Path]:
    """Compiles the proto into `out`; returns the files written."""
    from grpc_tools import protoc  # a build requirement, see pyproject.toml

    # The well-known types (duration, timestamp) ship inside grpc_tools.
    well_known = importlib.resources.files("grpc_tools") / "_proto"
    out.mkdir(parents=True, exist_ok=True)
    args = [
        "grpc_tools.protoc",
        f"-I{proto_root()}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        PROTO_FILE,
    ]
    if protoc.main(args) != 0:
        raise SystemExit(f"storage-grants-client: protoc failed on {PROTO_FILE}")
    package = out / "storagegrants" / "v1"
    init = package / "__init__.py"
    init.write_text('"""Messages and stubs generated from storagegrants/v1/grants.proto at build time."""\n')
    return [init, *sorted(package.glob("grants_pb2*"))]


class BuildWithStubs(build_py):
    """build_py, plus the generated `storagegrants.v1` package."""

    def run(self) -> None:
        super().run()
        self._generated = generate_stubs(Path(self.build_lib))

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        return [*super().get_outputs(include_bytecode), *(str(p) for p in getattr(self, "_generated", []))]


class SdistWithProto(sdist):
    """sdist, carrying the proto so that the sdist builds on its own."""

    def make_release_tree(self, base_dir: str, files: list[str]) -> None:
        super().make_release_tree(base_dir, files)
        source = proto_root() / PROTO_FILE
        target = Path(base_dir) / "proto" / PROTO_FILE
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)


setup(cmdclass={"build_py": BuildWithStubs, "sdist": SdistWithProto})
