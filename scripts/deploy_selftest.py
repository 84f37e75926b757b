"""The settings check of scripts/deploy_settings.py on bad samples, run by scripts/check_deploy.py
before it checks the real files: a checker that stops catching misspellings fails here.

Each test is a function `test_*` that raises AssertionError with what it saw. `run` runs them
all; `python3 scripts/deploy_selftest.py` runs them alone (with the pinned tools on PYTHONPATH).
"""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
from pathlib import Path

import yaml

from deploy_settings import (
    NATS_SERVER,
    ROOT,
    Accepts,
    check,
    compose_usages,
    dockerfile_env_and_cmd,
    facts_binary,
    kubernetes_usages,
    parse_help,
    run_program,
)


def sample_accepts() -> dict[str, Accepts]:
    return {
        "oomnitza-loader": Accepts(
            env={"NATS_URL", "RUST_LOG", "CONTROL_TOKEN_FILE", "OOMNITZA_URL"}, flags={"--config", "--integration"}
        ),
        "sage-extractor": Accepts(
            env={"NATS_URL", "RUST_LOG", "SAGE_PEOPLE_LOGIN_URL"},
            patterns=[re.compile(r"SAGE_PEOPLE_[A-Z0-9_]+_CLIENT_SECRET(_FILE)?")],
            flags={"--config"},
        ),
        NATS_SERVER: Accepts(flags={"--jetstream"}),
    }


def expect(problems: list[str], count: int, *named: str) -> None:
    everything = "\n".join(problems)
    assert len(problems) == count, f"expected {count} problem(s), got {len(problems)}:\n{everything}"
    for text in named:
        assert text in everything, f"{text!r} is not named in:\n{everything}"


# --- compose -----------------------------------------------------------------------------------

GOOD_COMPOSE = """
x-common: &common
  image: peoplesync:local
services:
  nats:
    image: nats:2.12-alpine
    command: ["--jetstream"]
  loader:
    <<: *common
    command: ["oomnitza-loader", "--config=/etc/loader.toml"]
    environment:
      NATS_URL: nats://nats:4222
      CONTROL_TOKEN_FILE: /run/secrets/control_token
  extractor:
    <<: *common
    command: sage-extractor
    environment:
      - NATS_URL=nats://nats:4222
      - SAGE_PEOPLE_EMEA_PROD_CLIENT_SECRET_FILE=/run/secrets/x
  grafana:
    image: grafana/grafana
    environment:
      GF_ANYTHING: goes
"""


def test_a_correct_compose_file_passes() -> None:
    usages = compose_usages(GOOD_COMPOSE, Path("."), "oomnitza-loader")
    assert len(usages) == 3, f"grafana is not ours: {usages}"
    expect(check(usages, sample_accepts()), 0)


def test_a_misspelt_env_var_flag_and_program_in_compose_are_named() -> None:
    bad = (
        GOOD_COMPOSE.replace("      NATS_URL: nats", "      NATS_ULR: nats")
        .replace("--config=", "--confg=")
        .replace("command: sage-extractor", "command: sage-extracter")
        .replace('["--jetstream"]', '["--jetstrem"]')
    )
    expect(
        check(compose_usages(bad, Path("."), "oomnitza-loader"), sample_accepts()),
        4,
        "service loader: oomnitza-loader does not read environment variable NATS_ULR",
        "oomnitza-loader has no flag --confg",
        "runs 'sage-extracter'",
        "nats-server has no flag --jetstrem",
    )


def test_env_files_and_their_commented_examples_are_read() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "loader.env.example").write_text("# a comment\nRUST_LOG=info\n# NATS_URRL=nats://example\n")
        compose = (
            "services:\n  loader:\n    build: .\n    command: [oomnitza-loader]\n"
            "    env_file:\n      - path: loader.env\n        required: false\n"
        )
        expect(check(compose_usages(compose, Path(tmp), "oomnitza-loader"), sample_accepts()), 1, "NATS_URRL")


# --- Kubernetes renderings ---------------------------------------------------------------------

BASE = """
apiVersion: v1
kind: ConfigMap
metadata:
  name: shared-env
data:
  NATS_URL: nats://nats:4222
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: loader
spec:
  template:
    spec:
      containers:
        - name: loader
          image: peoplesync
          command: ["oomnitza-loader"]
          args: ["--config", "/etc/loader.toml"]
          envFrom:
            - configMapRef:
                name: shared-env
          env:
            - name: CONTROL_TOKEN_FILE
              value: /run/secrets/control-token
        - name: sidecar
          image: example/sidecar
          env:
            - name: ANYTHING
              value: goes
"""

OVERLAY = """
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources: [../base]
configMapGenerator:
  - name: generated-env
    literals:
      - RUST_LOG=debug
generatorOptions:
  disableNameSuffixHash: true
patches:
  - path: patch.yaml
"""

PATCH = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: loader}
spec:
  template:
    spec:
      containers:
        - name: loader
          envFrom: [{configMapRef: {name: shared-env}}, {configMapRef: {name: generated-env}}]
          env: [{name: RUST_LOG, value: info}]
"""


def rendered_overlay(render, base: str, overlay: str = OVERLAY, patch: str = PATCH) -> list[dict]:
    """`base` and an overlay with a generator and a patch, rendered by check_deploy's renderer."""
    (ROOT / ".tools").mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=ROOT / ".tools") as tmp:
        for path, text in {
            "base/kustomization.yaml": "resources: [all.yaml]\n",
            "base/all.yaml": base,
            "overlay/kustomization.yaml": overlay,
            "overlay/patch.yaml": patch,
        }.items():
            (Path(tmp) / path).parent.mkdir(exist_ok=True)
            (Path(tmp) / path).write_text(text)
        return render(Path(tmp) / "overlay")


def test_a_correct_rendering_with_envfrom_generators_and_patches_passes(render) -> None:
    usages = kubernetes_usages("overlay", rendered_overlay(render, BASE), "oomnitza-loader")
    assert len(usages) == 1, f"the sidecar is not ours: {usages}"
    assert {"NATS_URL", "RUST_LOG", "CONTROL_TOKEN_FILE"} <= usages[0].env, usages
    expect(check(usages, sample_accepts()), 0)


def test_misspellings_in_env_envfrom_keys_args_generators_and_patches_are_named(render) -> None:
    base = (
        BASE.replace("  NATS_URL: nats", "  NATS_URLL: nats")
        .replace('args: ["--config"', 'args: ["--conifg"')
        .replace("- name: CONTROL_TOKEN_FILE", "- name: CONTROL_TOKENFILE")
    )
    overlay = OVERLAY.replace("- RUST_LOG=debug", "- RUST_LGO=debug")
    patch = PATCH.replace("{name: RUST_LOG,", "{name: RUST_LOGG,")
    usages = kubernetes_usages("overlay", rendered_overlay(render, base, overlay, patch), "oomnitza-loader")
    expect(
        check(usages, sample_accepts()),
        5,
        "overlay: Deployment loader container loader: oomnitza-loader does not read environment variable NATS_URLL",
        "has no flag --conifg",
        "CONTROL_TOKENFILE",
        "RUST_LGO",
        "RUST_LOGG",
    )


def test_envfrom_that_cannot_be_resolved_is_refused() -> None:
    bad = BASE.replace("name: shared-env\n          env:", "name: nowhere\n          env:")
    secret = BASE.replace("- configMapRef:\n                name: shared-env", "- secretRef:\n                name: creds")
    problems = check(kubernetes_usages("base", list(yaml.safe_load_all(bad)), "oomnitza-loader"), sample_accepts())
    expect(problems, 1, "envFrom ConfigMap nowhere is not in this rendering")
    problems = check(kubernetes_usages("base", list(yaml.safe_load_all(secret)), "oomnitza-loader"), sample_accepts())
    expect(problems, 1, "envFrom Secret creds: its keys cannot be checked")


SHARED = """
apiVersion: v1
kind: ConfigMap
metadata: {name: both-env}
data: {NATS_URL: x, OOMNITZA_URL: y, SAGE_PEOPLE_LOGIN_URL: z}
---
kind: Deployment
metadata: {name: loader}
spec: {template: {spec: {containers: [
  {name: loader, image: peoplesync, command: [oomnitza-loader], envFrom: [{configMapRef: {name: both-env}}]}]}}}
---
kind: Deployment
metadata: {name: extractor}
spec: {template: {spec: {containers: [
  {name: extractor, image: peoplesync, command: [sage-extractor], envFrom: [{configMapRef: {name: both-env}}],
   env: [{name: OOMNITZA_URL, value: y}]}]}}}
"""


def test_a_shared_configmap_needs_each_variable_read_by_one_of_its_programs() -> None:
    def problems(text: str) -> list[str]:
        return check(kubernetes_usages("chart", list(yaml.safe_load_all(text)), "oomnitza-loader"), sample_accepts())

    # OOMNITZA_URL given directly to the extractor is refused; in the shared map it is the loader's.
    expect(problems(SHARED), 1, "Deployment extractor container extractor: sage-extractor does not read environment variable OOMNITZA_URL")
    misspelt = SHARED.replace("OOMNITZA_URL: y", "OOMNITZA_ULR: y")
    expect(
        problems(misspelt),
        2,
        "chart: ConfigMap both-env: environment variable OOMNITZA_ULR is read by none of the programs it is given to",
    )


# --- the Dockerfile, the help texts, the services' own facts -----------------------------------


def test_dockerfile_env_and_the_last_cmd_are_found() -> None:
    dockerfile = (
        "FROM debian AS base\nENV A=1 \\\n    B=2\nFROM base AS sims\nCMD [\"oomnitza-sim\"]\n"
        "FROM base\nHEALTHCHECK --interval=15s \\\n  CMD [\"bash\", \"-c\", \"true\"]\nCMD [\"oomnitza-loader\"]\n"
    )
    assert dockerfile_env_and_cmd(dockerfile) == ({"A", "B"}, "oomnitza-loader"), dockerfile_env_and_cmd(dockerfile)


def test_help_parsing_finds_clap_flags_and_env_and_nats_server_flags() -> None:
    clap = "Options:\n      --config <CONFIG>  TOML file [env: PEOPLESYNC_LOADER_CONFIG=]\n  -h, --help  Print help\n"
    flags, env = parse_help(clap)
    assert {"--config", "--help"} <= flags, flags
    assert "PEOPLESYNC_LOADER_CONFIG" in env, env
    nats = "    -sd, --store_dir <dir>           Set the storage directory\n    -a, --addr, --net <host>\n"
    flags, _ = parse_help(nats)
    assert {"--store_dir", "--addr", "--net"} <= flags, flags


def test_credential_set_secrets_are_recognised_by_shape_only() -> None:
    result = run_program(facts_binary())
    assert result.returncode == 0, f"deploy_facts: {result.stderr.strip()}"
    patterns = json.loads(result.stdout)["programs"]["sage-extractor"]["env_patterns"]
    extractor = Accepts(patterns=[re.compile(p) for p in patterns])
    for good in ("SAGE_PEOPLE_EMEA_PROD_CLIENT_SECRET", "SAGE_PEOPLE_US2_PRIVATE_KEY_FILE", "SAGE_PEOPLE_X_PASSWORD"):
        assert extractor.reads(good), f"{good} is a credential-set secret"
    for bad in ("SAGE_PEOPLE_CLIENT_SECRET_FIEL", "SAGE_PEOPLE__PASSWORD", "SAGE_PEOPLE_emea_PASSWORD", "SAGE_PEOPLE_PASSWORD_"):
        assert not extractor.reads(bad), f"{bad} is not a credential-set secret"


def run(problem, ok, render) -> None:
    """Runs every test; `render` is check_deploy's kustomize renderer."""
    print("The checker of settings, on bad samples")
    tests = [(name, f) for name, f in globals().items() if name.startswith("test_")]
    passed = 0
    for name, test in tests:
        try:
            test(render) if "render" in test.__code__.co_varnames[: test.__code__.co_argcount] else test()
            passed += 1
        except (AssertionError, OSError, ValueError, KeyError, subprocess.SubprocessError) as err:
            problem(f"the settings checker fails its self-test {name}: {type(err).__name__}: {err}")
    if passed == len(tests):
        ok(f"{passed} self-tests on bad samples pass")


if __name__ == "__main__":
    import sys

    import check_deploy

    run(check_deploy.problem, check_deploy.ok, check_deploy.render)
    sys.exit(1 if check_deploy.problems else 0)
