"""Coverage-guided fuzzing of Caseway's parsers with atheris (libFuzzer), for long runs.

Not run in CI (the bounded hypothesis tests in tests/test_fuzz.py are). Install the
``fuzz`` extra, then, for example:

    .venv/bin/pip install -e '.[fuzz]'
    mkdir -p /tmp/fuzz-open && cp tests/fuzz/seeds/open/* /tmp/fuzz-open/
    .venv/bin/python tests/fuzz/fuzz_caseway.py open -max_total_time=3600 \
        -dict=tests/fuzz/json.dict /tmp/fuzz-open

(libFuzzer adds every new interesting input to the first corpus directory: give it a
scratch copy, not the seeds kept in the repository.) On this 2-core machine each target
runs at roughly 70,000–130,000 executions per second.

The first argument picks a target from tests/fuzz/targets.py (parse_json, b64, open,
receipt, directory); the rest go to libFuzzer. ``--write-seeds`` writes a valid envelope,
receipt and JSON document into tests/fuzz/seeds/<target>/ as starting points. A crash
(any exception other than a typed CasewayError, or a failed invariant) leaves a
``crash-*`` file to replay with ``python tests/fuzz/fuzz_caseway.py <target> crash-...``.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def write_seeds() -> None:
    from targets import valid_envelope, valid_receipt

    envelope = valid_envelope()
    seeds = {"open": envelope, "receipt": valid_receipt(envelope),
             "parse_json": b'{"a":[1,"x",{"b":null}],"c":true}', "b64": b"AAECAwQFBgc",
             "directory": b'{"protected":"e30","signature":"' + b"A" * 86 + b'"}'}
    for name, data in seeds.items():
        folder = HERE / "seeds" / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "valid").write_bytes(data)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--write-seeds":
        write_seeds()
        return
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    import atheris

    with atheris.instrument_imports():
        import targets
    target = targets.TARGETS[sys.argv[1]]
    atheris.Setup([sys.argv[0], *sys.argv[2:]], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
