"""A minimal PEP 517 / PEP 660 build backend using only the standard library.

It builds a pure-Python wheel (py3-none-any) of the packages listed in
``[tool.arbor-build] packages`` with metadata from ``[project]``, an sdist,
and an editable wheel (a ``.pth`` file). No index access, no setuptools.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import re
import tarfile
import time
import zipfile
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

try:
    import tomllib  # Python 3.11+
except ModuleNotFoundError:  # pragma: no cover - older Pythons
    tomllib = None  # type: ignore[assignment]

ROOT = Path(__file__).resolve().parent.parent


def _load_pyproject() -> Dict[str, Any]:
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    if tomllib is not None:
        return tomllib.loads(text)
    return _mini_toml(text)


def _mini_toml(text: str) -> Dict[str, Any]:
    """Just enough TOML for this pyproject.toml on Python < 3.11."""
    import ast

    data: Dict[str, Any] = {}
    table: Dict[str, Any] = data
    buf = ""
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip() if not buf else raw.strip()
        if not line and not buf:
            continue
        if not buf and line.startswith("[") and line.endswith("]"):
            table = data
            for part in line.strip("[]").split("."):
                table = table.setdefault(part.strip(), {})
            continue
        buf += " " + line
        if buf.count("[") != buf.count("]") or buf.count("{") != buf.count("}"):
            continue
        key, _, value = buf.partition("=")
        buf = ""
        value = value.strip()
        value = re.sub(r"\{\s*(\w+)\s*=", r'{"\1":', value)
        value = value.replace("true", "True").replace("false", "False")
        table[key.strip().strip('"')] = ast.literal_eval(value)
    return data


def _meta() -> Tuple[str, str, Dict[str, Any], Dict[str, Any]]:
    pp = _load_pyproject()
    project = pp["project"]
    name = project["name"]
    version = project["version"]
    return name, version, project, pp.get("tool", {}).get("arbor-build", {})


def _dist_name(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def _metadata_text(project: Dict[str, Any]) -> str:
    lines = [
        "Metadata-Version: 2.1",
        f"Name: {project['name']}",
        f"Version: {project['version']}",
    ]
    if project.get("description"):
        lines.append(f"Summary: {project['description']}")
    if project.get("requires-python"):
        lines.append(f"Requires-Python: {project['requires-python']}")
    lic = project.get("license")
    if isinstance(lic, dict) and lic.get("text"):
        lines.append(f"License: {lic['text']}")
    if project.get("keywords"):
        lines.append("Keywords: " + ",".join(project["keywords"]))
    for c in project.get("classifiers", []):
        lines.append(f"Classifier: {c}")
    for dep in project.get("dependencies", []):
        lines.append(f"Requires-Dist: {dep}")
    body = ""
    readme = project.get("readme")
    if isinstance(readme, str) and (ROOT / readme).is_file():
        lines.append("Description-Content-Type: text/markdown")
        body = (ROOT / readme).read_text(encoding="utf-8")
    return "\n".join(lines) + "\n\n" + body


def _package_files(packages: List[str]) -> Iterator[Path]:
    for pkg in packages:
        base = ROOT / pkg
        for root, dirs, files in os.walk(base):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__" and not d.startswith("."))
            for f in sorted(files):
                if f.endswith((".pyc", ".pyo")) or f.startswith("."):
                    continue
                yield Path(root) / f


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


class _Wheel:
    def __init__(self, path: Path) -> None:
        self.zf = zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED)
        self.records: List[str] = []

    def add(self, arcname: str, data: bytes, mode: int = 0o644) -> None:
        info = zipfile.ZipInfo(arcname, date_time=(2020, 1, 1, 0, 0, 0))
        info.external_attr = (0o100000 | mode) << 16
        info.compress_type = zipfile.ZIP_DEFLATED
        self.zf.writestr(info, data)
        self.records.append(f"{arcname},{_record_hash(data)},{len(data)}")

    def close(self, record_name: str) -> None:
        self.records.append(f"{record_name},,")
        info = zipfile.ZipInfo(record_name, date_time=(2020, 1, 1, 0, 0, 0))
        info.external_attr = 0o100644 << 16
        self.zf.writestr(info, "\n".join(self.records) + "\n")
        self.zf.close()


def _dist_info_files(name: str, version: str, project: Dict[str, Any], packages: List[str]) -> Dict[str, bytes]:
    return {
        "METADATA": _metadata_text(project).encode("utf-8"),
        "WHEEL": (
            "Wheel-Version: 1.0\nGenerator: arbor_build 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ).encode(),
        "top_level.txt": ("\n".join(packages) + "\n").encode(),
    }


# -- PEP 517 hooks ---------------------------------------------------------


def get_requires_for_build_wheel(config_settings: Optional[Dict[str, Any]] = None) -> List[str]:
    return []


def get_requires_for_build_sdist(config_settings: Optional[Dict[str, Any]] = None) -> List[str]:
    return []


def get_requires_for_build_editable(config_settings: Optional[Dict[str, Any]] = None) -> List[str]:
    return []


def prepare_metadata_for_build_wheel(metadata_directory: str, config_settings: Optional[Dict[str, Any]] = None) -> str:
    name, version, project, tool = _meta()
    di = f"{_dist_name(name)}-{version}.dist-info"
    d = Path(metadata_directory) / di
    d.mkdir(parents=True, exist_ok=True)
    for fname, data in _dist_info_files(name, version, project, tool.get("packages", [])).items():
        (d / fname).write_bytes(data)
    return di


prepare_metadata_for_build_editable = prepare_metadata_for_build_wheel


def _build(wheel_directory: str, editable: bool) -> str:
    name, version, project, tool = _meta()
    packages = tool.get("packages", [])
    dn = _dist_name(name)
    fname = f"{dn}-{version}-py3-none-any.whl"
    os.makedirs(wheel_directory, exist_ok=True)
    w = _Wheel(Path(wheel_directory) / fname)
    if editable:
        w.add(f"__editable__.{dn}.pth", (str(ROOT) + "\n").encode())
    else:
        for p in _package_files(packages):
            w.add(p.relative_to(ROOT).as_posix(), p.read_bytes())
    di = f"{dn}-{version}.dist-info"
    for f, data in _dist_info_files(name, version, project, packages).items():
        w.add(f"{di}/{f}", data)
    w.close(f"{di}/RECORD")
    return fname


def build_wheel(wheel_directory: str, config_settings: Optional[Dict[str, Any]] = None,
                metadata_directory: Optional[str] = None) -> str:
    return _build(wheel_directory, editable=False)


def build_editable(wheel_directory: str, config_settings: Optional[Dict[str, Any]] = None,
                   metadata_directory: Optional[str] = None) -> str:
    return _build(wheel_directory, editable=True)


def build_sdist(sdist_directory: str, config_settings: Optional[Dict[str, Any]] = None) -> str:
    name, version, project, tool = _meta()
    base = f"{_dist_name(name)}-{version}"
    os.makedirs(sdist_directory, exist_ok=True)
    out = Path(sdist_directory) / f"{base}.tar.gz"
    files: List[Path] = [ROOT / "pyproject.toml", ROOT / "_build" / "arbor_build.py"]
    for extra in ("README.md", "LICENSE"):
        if (ROOT / extra).is_file():
            files.append(ROOT / extra)
    files += list(_package_files(tool.get("packages", [])))
    tests = ROOT / "tests"
    if tests.is_dir():
        files += [p for p in sorted(tests.rglob("*")) if p.is_file() and "__pycache__" not in p.parts]
    pkg_info = _metadata_text(project).encode("utf-8")
    with tarfile.open(out, "w:gz", format=tarfile.PAX_FORMAT) as tf:
        for p in files:
            ti = tf.gettarinfo(str(p), f"{base}/{p.relative_to(ROOT).as_posix()}")
            ti.uid = ti.gid = 0
            ti.uname = ti.gname = ""
            with open(p, "rb") as fh:
                tf.addfile(ti, fh)
        ti = tarfile.TarInfo(f"{base}/PKG-INFO")
        ti.size, ti.mtime, ti.mode = len(pkg_info), int(time.time()), 0o644
        tf.addfile(ti, io.BytesIO(pkg_info))
    return out.name
