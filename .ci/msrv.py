#!/usr/bin/env python3
"""Check that Cargo.toml's `rust-version` is what the dependency graph needs.

The newest `rust-version` declared by any crate that a user compiles with every feature on
(normal dependencies, reached from this package; not dev-dependencies or build tools of the
tests) must equal ours: lower would promise a toolchain the graph cannot build with, higher
would refuse toolchains that work. Read from `cargo metadata`, since no other toolchain can be
installed here to try.
"""
import json
import subprocess
import sys


def version(text):
    parts = [int(p) for p in text.split(".")]
    return tuple(parts + [0] * (3 - len(parts)))


def main():
    metadata = json.loads(
        subprocess.run(
            ["cargo", "metadata", "--format-version", "1", "--all-features", "--locked"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    packages = {p["id"]: p for p in metadata["packages"]}
    nodes = {n["id"]: n for n in metadata["resolve"]["nodes"]}
    root = metadata["resolve"]["root"]
    ours = packages[root]

    seen, stack = set(), [root]
    while stack:
        node = nodes[stack.pop()]
        for dep in node["deps"]:
            kinds = {k["kind"] for k in dep["dep_kinds"]}
            # Normal (None) and build dependencies of what users compile.
            if (None in kinds or "build" in kinds) and dep["pkg"] not in seen:
                seen.add(dep["pkg"])
                stack.append(dep["pkg"])

    needed = max(
        (packages[i] for i in seen if packages[i].get("rust_version")),
        key=lambda p: version(p["rust_version"]),
    )
    declared = ours.get("rust_version") or "unset"
    print(
        f"rust-version: declared {declared}; the graph needs {needed['rust_version']} "
        f"({needed['name']} {needed['version']}) across {len(seen)} crates with every feature"
    )
    if declared == "unset" or version(declared) != version(needed["rust_version"]):
        print(
            f"set rust-version = \"{needed['rust_version']}\" in Cargo.toml",
            file=sys.stderr,
        )
        sys.exit(1)


main()
