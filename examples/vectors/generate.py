"""Regenerate every test vector: ``python examples/vectors/generate.py``.

Each ``gen_<kind>.py`` beside this file exposes ``generate() -> list[dict]``; every vector
dict has ``name`` (file stem), ``kind``, ``description``, its inputs, intermediate values
and ``expected`` ({"result": "ok"} or {"error": "<code>"}). Vectors are deterministic: all
keys, ids, ephemeral secrets and times are fixed, so a run reproduces them byte for byte.
Files go to ``examples/vectors/<kind>/<name>.json``; ``index.json`` lists them all.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _load(path: Path):  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    return module


def main() -> None:
    index = []
    for gen in sorted(HERE.glob("gen_*.py")):
        for vector in _load(gen).generate():
            kind, name = vector["kind"], vector["name"]
            out = HERE / kind / f"{name}.json"
            out.parent.mkdir(exist_ok=True)
            out.write_text(json.dumps(vector, indent=2, ensure_ascii=False) + "\n", "utf-8")
            index.append({"file": f"{kind}/{name}.json", "kind": kind,
                          "description": vector["description"], "expected": vector["expected"]})
    index.sort(key=lambda entry: entry["file"])
    (HERE / "index.json").write_text(json.dumps({"vectors": index}, indent=2,
                                                ensure_ascii=False) + "\n", "utf-8")
    print(f"wrote {len(index)} vectors")


if __name__ == "__main__":
    main()
