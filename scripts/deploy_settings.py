"""The settings the deployment files give the peoplesync programs, against what the programs
read; part of scripts/check_deploy.py (its section 6), tested on bad samples by
scripts/deploy_selftest.py.

Every environment variable and flag that docker-compose.yml (with its env files), the Dockerfile,
and every Kubernetes rendering (each kustomization, the Helm chart with its defaults and with
every option on) give a peoplesync program must be one that program reads; a misspelt variable
is otherwise a setting silently ignored in production. What a program reads comes from the
program itself, never from a list kept here:

- its `--help` (flags, and clap's `[env: NAME]` variables), for every program of the image and
  for nats-server;
- for the two services, `deploy_facts` (an example of the tests package, tests/examples/): their
  `ENV_VARS`, the `PEOPLESYNC_<SERVICE>__<KEY>` variable of every key of their configuration,
  and the shapes they read by pattern (the extractor's per-credential-set secrets).

A variable reaches a container directly (`env:`, compose `environment:`, an env file) or from a
ConfigMap (`envFrom`). Given directly, or from a ConfigMap only one program uses, it must be read
by that program. A ConfigMap that several programs use is a shared environment (the Helm chart's
`env` value is given to both services on purpose): each of its variables must be read by at least
one program it is given to, so a misspelling, which none reads, is still caught.

The shipped configuration files must load as the services load them, the Kubernetes base must
ship the default integration config, and the compose demo tenant must have its custom fields.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent

# The programs of the peoplesync images (the Dockerfile's two final stages).
PROGRAMS = ("sage-extractor", "oomnitza-loader", "syncctl", "sage-people-sim", "oomnitza-sim")
# Programs whose `--help` is read (syncctl runs in no deployment file).
HELP_PROGRAMS = ("sage-extractor", "oomnitza-loader", "sage-people-sim", "oomnitza-sim")
# The name under which nats-server's flags are checked (the compose `nats` service).
NATS_SERVER = "nats-server"


@dataclass
class Accepts:
    """What one program reads."""

    env: set[str] = field(default_factory=set)
    # Variables read by shape rather than by name.
    patterns: list[re.Pattern] = field(default_factory=list)
    flags: set[str] = field(default_factory=set)

    def reads(self, var: str) -> bool:
        return var in self.env or any(p.fullmatch(var) for p in self.patterns)


@dataclass
class Usage:
    """The variables and flags one deployment file gives one program."""

    # Where, for the message: `docker-compose.yml service loader`.
    place: str
    program: str = ""
    env: set[str] = field(default_factory=set)
    flags: set[str] = field(default_factory=set)
    # Variables from a ConfigMap several programs use: variable -> the ConfigMap's place.
    shared: dict[str, str] = field(default_factory=dict)
    # What could not be resolved (an envFrom naming a ConfigMap that is nowhere).
    unresolved: list[str] = field(default_factory=list)
    # The files that spell a variable, where `place` does not say (env files, a rendering's
    # sources): variable -> files.
    origin: dict[str, list[str]] = field(default_factory=dict)


# --- what the programs read ----------------------------------------------------------------


def parse_help(text: str) -> tuple[set[str], set[str]]:
    """Flags (`--name`) and `[env: NAME]` variables of a clap or nats-server `--help`."""
    flags = {
        "--" + m
        for token in re.split(r"[\s,\[\]]+", text)
        if token.startswith("--") and (m := re.match(r"[A-Za-z0-9_-]*", token[2:]).group())
    }
    env = set(re.findall(r"\[env: ([A-Za-z0-9_]+)", text))
    return flags, env


def target_dir() -> Path:
    return Path(os.environ.get("CARGO_TARGET_DIR") or ROOT / "target") / "debug"


def run_program(path: Path, *args: str) -> subprocess.CompletedProcess:
    # A clean environment: what a program reads must not depend on the caller's variables.
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    return subprocess.run([str(path), *args], capture_output=True, text=True, env=env, timeout=60)


def help_of(path: Path) -> str:
    result = run_program(path, "--help")
    return result.stdout + result.stderr  # nats-server prints its usage on stderr


def nats_server_binary() -> Path:
    if os.environ.get("NATS_SERVER_BIN"):
        return Path(os.environ["NATS_SERVER_BIN"])
    installed = ROOT / ".tools" / "bin" / "nats-server"
    return installed if installed.exists() else Path("nats-server")


def facts_binary() -> Path:
    return target_dir() / "examples" / "deploy_facts"


def accepted_by_the_programs() -> tuple[dict[str, Accepts], dict]:
    """What every program of the image (and nats-server) reads, and the services' facts."""
    accepts: dict[str, Accepts] = {}
    for program in HELP_PROGRAMS:
        flags, env = parse_help(help_of(target_dir() / program))
        accepts[program] = Accepts(env=env, flags=flags)
    result = run_program(facts_binary())
    if result.returncode != 0:
        raise RuntimeError(f"deploy_facts failed: {result.stderr.strip()}")
    facts = json.loads(result.stdout)
    for program, read in facts["programs"].items():
        accepts[program].env |= set(read["env"])
        accepts[program].patterns += [re.compile(p) for p in read["env_patterns"]]
    flags, _ = parse_help(help_of(nats_server_binary()))
    accepts[NATS_SERVER] = Accepts(flags=flags)
    return accepts, facts


# --- what the deployment files give ----------------------------------------------------------


def strings(value) -> list[str]:
    if isinstance(value, list):
        return [str(v) for v in value if isinstance(v, (str, int, float))]
    if isinstance(value, str):
        return value.split()
    return []


def flag_names(args) -> set[str]:
    return {a.split("=", 1)[0] for a in args if a.startswith("--")}


def env_file_names(text: str) -> set[str]:
    """Variable names of an env file (`NAME=value`), commented-out examples included: an operator
    uncommenting one should get a variable that works."""
    names = set()
    for line in text.splitlines():
        line = line.strip().lstrip("#").strip()
        name, sep, _ = line.partition("=")
        name = name.strip().removeprefix("export ")
        if sep and re.fullmatch(r"[A-Z0-9_]+", name):
            names.add(name)
    return names


def compose_usages(source: str, root: Path, default_program: str) -> list[Usage]:
    """The usages of a compose file; `root` resolves env files, `default_program` is the image's
    CMD for services of the peoplesync image without a command."""
    compose = yaml.safe_load(source) or {}
    services = compose.get("services")
    if not isinstance(services, dict):
        raise ValueError("no services")
    usages = []
    for name, service in services.items():
        command = strings(service.get("command"))
        image = str(service.get("image") or "")
        usage = Usage(place=f"docker-compose.yml service {name}")
        if image.startswith(("nats:", "nats@")):
            # nats-server's own flags; its environment is not ours to check.
            usages.append(Usage(place=usage.place, program=NATS_SERVER, flags=flag_names(command)))
            continue
        if "build" not in service and "peoplesync" not in image:
            continue  # third-party images (Prometheus, Grafana, the NATS exporter)
        usage.program = command[0] if command else default_program
        usage.flags = flag_names(command[1:])
        environment = service.get("environment")
        if isinstance(environment, dict):
            usage.env |= {str(k) for k in environment}
        elif isinstance(environment, list):
            usage.env |= {str(v).split("=", 1)[0] for v in environment}
        env_files = service.get("env_file") or []
        for entry in [env_files] if isinstance(env_files, str) else env_files:
            path = entry if isinstance(entry, str) else entry.get("path")
            candidates = [root / path, root / f"{path}.example"]
            found = next((c for c in candidates if c.exists()), None)
            if found is None:
                usage.unresolved.append(f"env file {path} (or {path}.example) is missing")
            else:
                for var in env_file_names(found.read_text()):
                    usage.env.add(var)
                    usage.origin.setdefault(var, []).append(str(found.relative_to(root)))
        usages.append(usage)
    return usages


def pod_specs(doc: dict) -> list[dict]:
    """The pod specs of a Kubernetes object (workloads, CronJobs, bare Pods)."""
    spec = doc.get("spec") or {}
    found = [
        (spec.get("template") or {}).get("spec"),
        (((spec.get("jobTemplate") or {}).get("spec") or {}).get("template") or {}).get("spec"),
        spec if doc.get("kind") == "Pod" else None,
    ]
    return [s for s in found if isinstance(s, dict)]


def containers(pod: dict) -> list[dict]:
    return (pod.get("initContainers") or []) + (pod.get("containers") or [])


def kubernetes_usages(
    context: str, docs: list[dict], default_program: str, sources: dict[str, str] | None = None
) -> list[Usage]:
    """The usages of one rendering (`context` names it: a kustomization or a Helm rendering);
    `sources` (path -> text) are the files it was rendered from, to name the ones that spell a
    variable."""
    config_maps = {
        d["metadata"]["name"]: set(d.get("data") or {}) | set(d.get("binaryData") or {})
        for d in docs
        if d.get("kind") == "ConfigMap"
    }
    usages = []
    for doc in docs:
        meta = doc.get("metadata") or {}
        for pod in pod_specs(doc):
            for container in containers(pod):
                command, args = strings(container.get("command")), strings(container.get("args"))
                image = str(container.get("image") or "")
                if command:
                    program, flags = command[0], command[1:] + args
                elif "peoplesync" not in image:
                    continue  # a third-party sidecar
                elif args and args[0] in PROGRAMS:
                    program, flags = args[0], args[1:]
                else:
                    program, flags = default_program, args
                place = f"{context}: {doc.get('kind')} {meta.get('name')} container {container.get('name')}"
                usage = Usage(place=place, program=program, flags=flag_names(flags))
                usage.env |= {v["name"] for v in container.get("env") or [] if "name" in v}
                for source in container.get("envFrom") or []:
                    prefix = source.get("prefix", "")
                    ref = (source.get("configMapRef") or {}).get("name")
                    if ref and ref not in config_maps:
                        usage.unresolved.append(f"envFrom ConfigMap {ref} is not in this rendering")
                    elif ref:
                        usage.shared |= {f"{prefix}{k}": f"{context}: ConfigMap {ref}" for k in config_maps[ref]}
                    secret = (source.get("secretRef") or {}).get("name")
                    if secret:
                        usage.unresolved.append(
                            f"envFrom Secret {secret}: its keys cannot be checked; mount secrets as files and name them in env"
                        )
                usages.append(usage)
    # A ConfigMap only one program uses is that program's own environment: checked strictly.
    users: dict[str, set[str]] = {}
    for usage in usages:
        for where in set(usage.shared.values()):
            users.setdefault(where, set()).add(usage.program)
    for usage in usages:
        own = {var for var, where in usage.shared.items() if len(users[where]) == 1}
        usage.env |= own
        usage.shared = {var: where for var, where in usage.shared.items() if var not in own}
        for var in usage.env | usage.flags | set(usage.shared):
            spelt = [path for path, text in (sources or {}).items() if re.search(rf"(?<![\w-]){re.escape(var)}(?![\w-])", text)]
            if spelt:
                usage.origin[var] = spelt
    return usages


def dockerfile_env_and_cmd(text: str) -> tuple[set[str], str | None]:
    """The Dockerfile's `ENV` names and the program its last `CMD` runs."""
    env, cmd = set(), None
    for line in text.replace("\\\n", " ").splitlines():
        line = line.strip()
        if line.startswith("ENV "):
            env |= {a.split("=", 1)[0] for a in line[4:].split() if "=" in a}
        elif line.startswith("CMD "):
            rest = line[4:].strip()
            try:
                words = json.loads(rest)
            except json.JSONDecodeError:
                words = rest.split()
            cmd = words[0] if words else None
    return env, cmd


# --- the verdict -----------------------------------------------------------------------------


def check(usages: list[Usage], accepts: dict[str, Accepts]) -> list[str]:
    """Every problem of `usages`, one line each, naming the file, the program and the name."""
    problems = []
    shared: dict[tuple[str, str], list[str]] = {}
    origin: dict[str, list[str]] = {}

    def spelt_in(usage: Usage, var: str) -> str:
        files = usage.origin.get(var)
        return f" (spelt so in {', '.join(files)})" if files else ""

    for usage in usages:
        problems += [f"{usage.place}: {u}" for u in usage.unresolved]
        accepted = accepts.get(usage.program)
        if accepted is None:
            problems.append(
                f"{usage.place}: runs {usage.program!r}, which is not a program of the image ({', '.join(PROGRAMS)})"
            )
            continue
        for var in sorted(v for v in usage.env if not accepted.reads(v)):
            problems.append(
                f"{usage.place}: {usage.program} does not read environment variable {var}{spelt_in(usage, var)}"
            )
        for flag in sorted(f for f in usage.flags if f not in accepted.flags):
            problems.append(f"{usage.place}: {usage.program} has no flag {flag}{spelt_in(usage, flag)}")
        for var, where in usage.shared.items():
            shared.setdefault((where, var), []).append(usage.program)
            origin[var] = usage.origin.get(var, [])
    for (where, var), programs in sorted(shared.items()):
        if not any(p in accepts and accepts[p].reads(var) for p in programs):
            files = f" (spelt so in {', '.join(origin[var])})" if origin[var] else ""
            problems.append(
                f"{where}: environment variable {var}{files} is read by none of the programs it is given to "
                f"({', '.join(sorted(set(programs)))})"
            )
    return problems


# --- the checks on the real files ------------------------------------------------------------


def referenced_by_kustomizations(kube: Path) -> set[Path]:
    """The files every kustomization under `kube` renders: its resources and patches."""
    referenced = set()
    for kustomization in kube.rglob("kustomization.yaml"):
        data = yaml.safe_load(kustomization.read_text()) or {}
        referenced.add(kustomization)
        paths = list(data.get("resources") or []) + [p["path"] for p in data.get("patches") or [] if "path" in p]
        referenced |= {(kustomization.parent / p).resolve() for p in paths}
    return referenced


def rendering_sources(context: str) -> dict[str, str]:
    """The text of the files a rendering comes from: every file of the kustomization `context`
    and of the kustomizations it includes, or of the Helm chart `context` names, or the file
    itself."""
    path = ROOT / context.split(" (")[0]
    files: list[Path] = []
    pending = [path]
    while pending:
        current = pending.pop()
        if current.is_file():
            files.append(current)
        elif (current / "kustomization.yaml").exists():
            data = yaml.safe_load((current / "kustomization.yaml").read_text()) or {}
            files += [f for f in current.rglob("*") if f.is_file()]
            pending += [(current / r).resolve() for r in data.get("resources") or [] if (current / r).is_dir()]
        elif current.is_dir():
            files += [f for f in current.rglob("*") if f.is_file()]
    return {str(f.resolve().relative_to(ROOT)): f.read_text(errors="replace") for f in sorted(set(files))}


def unrendered_workloads(kube: Path) -> dict[str, list[dict]]:
    """Manifests with a pod spec that no kustomization renders (applied by hand, if at all):
    checked as they stand."""
    referenced = referenced_by_kustomizations(kube)
    found = {}
    for path in sorted(kube.rglob("*.y*ml")):
        if path.resolve() in referenced:
            continue
        docs = [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict)]
        if any(pod_specs(d) for d in docs):
            found[str(path.relative_to(ROOT))] = docs
    return found


def load_config(kind: str, path: Path) -> tuple[bool, str]:
    result = run_program(facts_binary(), "load", kind, str(path))
    return result.returncode == 0, (result.stdout if result.returncode == 0 else result.stderr.strip())


def check_configs(facts: dict, problem, ok) -> None:
    """The shipped configuration files load as the services load them; the Kubernetes base ships
    the default integration config; the compose demo tenant has its custom fields."""
    configs = sorted((ROOT / "deploy").rglob("*.toml"))
    if len(configs) < 5:
        problem(f"found only {len(configs)} configuration files under deploy/: {configs}")
    for path in configs:
        kind = path.stem if path.stem in ("loader", "extractor") else "integration"
        loaded, message = load_config(kind, path)
        if not loaded:
            problem(f"{path.relative_to(ROOT)} does not load as a {kind} config: {message}")
    ok(f"{len(configs)} shipped configuration files load as the services load them")

    shipped = ROOT / "deploy" / "kubernetes" / "base" / "config" / "sage-people.toml"
    _, stored = load_config("integration", shipped)
    default = run_program(facts_binary(), "default-integration", "sage-people").stdout
    if stored != default:
        problem(
            f"{shipped.relative_to(ROOT)} is not the default integration config; regenerate it: "
            "oomnitza-loader --print-default-integration sage-people"
        )
    else:
        ok(f"{shipped.relative_to(ROOT)} is the default integration config")

    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    environment = compose["services"]["oomnitza-sim"].get("environment") or {}
    configured = str(environment.get("OOMNITZA_SIM_CUSTOM_FIELDS", "")).strip()
    if configured != facts["default_custom_fields"]:
        problem(
            "docker-compose.yml service oomnitza-sim: OOMNITZA_SIM_CUSTOM_FIELDS is not the custom "
            f"fields of the default integration: {facts['default_custom_fields']}"
        )
    else:
        ok("the compose demo tenant has the custom fields of the default integration")


def check_settings(renderings: dict[str, list[dict]], problem, ok) -> None:
    """Section 6 of scripts/check_deploy.py on the real files; `renderings` are the Kubernetes
    renderings (kustomize and Helm) the earlier sections made."""
    print("Settings given to the programs")
    try:
        accepts, facts = accepted_by_the_programs()
    except (OSError, RuntimeError, ValueError, KeyError, subprocess.TimeoutExpired) as err:
        problem(
            "cannot read what the programs accept; build them (scripts/check-deploy without --no-build does): "
            f"{err}"
        )
        return
    problems: list[str] = []
    env, cmd = dockerfile_env_and_cmd((ROOT / "Dockerfile").read_text())
    if cmd not in PROGRAMS:
        problems.append(f"Dockerfile: CMD runs {cmd!r}, which is not a program of the image")
    if "PEOPLESYNC_HTTP_LISTEN" not in env:
        problems.append(f"Dockerfile: the checker found no ENV PEOPLESYNC_HTTP_LISTEN (found {sorted(env)})")
    for var in sorted(env):
        if not (accepts["oomnitza-loader"].reads(var) and accepts["sage-extractor"].reads(var)):
            problems.append(f"Dockerfile: ENV {var} is not read by both services")
    default_program = cmd or "oomnitza-loader"

    compose = compose_usages((ROOT / "docker-compose.yml").read_text(), ROOT, default_program)
    programs = [u.program for u in compose]
    if programs.count("oomnitza-loader") != 1 or "sage-extractor" not in programs:
        problems.append(f"docker-compose.yml: the checker did not find one loader and an extractor ({programs})")
    usages = list(compose)
    renderings = {**renderings, **unrendered_workloads(ROOT / "deploy" / "kubernetes")}
    for context, docs in renderings.items():
        found = kubernetes_usages(context, docs, default_program, rendering_sources(context))
        if not any(u.program == "oomnitza-loader" and "NATS_URL" in u.env | set(u.shared) for u in found):
            problems.append(f"{context}: the checker found no loader given NATS_URL (envFrom resolved)")
        usages += found
    problems += check(usages, accepts)
    for text in problems:
        problem(text)
    if not problems:
        ok(
            f"{len(usages)} containers and services in docker-compose.yml and {len(renderings)} Kubernetes "
            "renderings are given only variables and flags their programs read"
        )
    check_configs(facts, problem, ok)
