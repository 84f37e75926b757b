//! The deployment files against the programs they run, and the operations endpoint of running
//! services.
//!
//! Every environment variable and flag that `docker-compose.yml`, its env files, the
//! Dockerfile and the Kubernetes manifests give a peoplesync program must be one that program
//! reads: the services' `ENV_VARS` lists and, for every program, what its `--help` shows (the
//! binaries built by `scripts/test`). A misspelt variable is otherwise a setting silently
//! ignored in production. The checker itself is tested on bad samples below.

use std::collections::{BTreeMap, BTreeSet};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde::Deserialize;
use serde_norway::Value;

/// Programs in the peoplesync image.
const PROGRAMS: &[&str] = &[
    "sage-extractor",
    "oomnitza-loader",
    "syncctl",
    "sage-people-sim",
    "oomnitza-sim",
];

/// The name under which `nats-server`'s flags are checked (the compose `nats` service).
const NATS_SERVER: &str = "nats-server";

/// A test for variable names accepted by shape rather than listed one by one.
type EnvPattern = fn(&str) -> bool;

/// What one program accepts.
#[derive(Debug, Default, Clone)]
struct Accepts {
    env: BTreeSet<String>,
    /// Variables accepted by shape rather than by name (per-credential-set secrets).
    env_pattern: Option<EnvPattern>,
    flags: BTreeSet<String>,
}

impl Accepts {
    fn reads(&self, var: &str) -> bool {
        self.env.contains(var) || self.env_pattern.is_some_and(|matches| matches(var))
    }
}

/// The environment variables and flags a deployment file gives one program.
#[derive(Debug, Default)]
struct Usage {
    /// Where, for the failure message: `docker-compose.yml service loader`.
    place: String,
    program: String,
    env: BTreeSet<String>,
    flags: BTreeSet<String>,
    /// What could not be resolved (an envFrom naming a ConfigMap that is nowhere).
    unresolved: Vec<String>,
}

/// `SAGE_PEOPLE_<NAME>_{CLIENT_SECRET,PRIVATE_KEY,PASSWORD}[_FILE]`: the secrets of a named
/// credential set (docs/configuration.md).
fn is_credential_set_secret(var: &str) -> bool {
    let Some(rest) = var.strip_prefix("SAGE_PEOPLE_") else {
        return false;
    };
    let rest = rest.strip_suffix("_FILE").unwrap_or(rest);
    ["_CLIENT_SECRET", "_PRIVATE_KEY", "_PASSWORD"]
        .iter()
        .any(|secret| {
            rest.strip_suffix(secret).is_some_and(|name| {
                !name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
            })
        })
}

// --- reading what the programs accept ------------------------------------------------------

/// Flags (`--name`) and `[env: NAME]` variables in a clap or nats-server `--help` text.
fn parse_help(help: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut flags = BTreeSet::new();
    let mut env = BTreeSet::new();
    for token in help.split(|c: char| c.is_whitespace() || c == ',' || c == '[' || c == ']') {
        if let Some(flag) = token.strip_prefix("--") {
            let name: String = flag
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                .collect();
            if !name.is_empty() {
                flags.insert(format!("--{name}"));
            }
        }
    }
    for part in help.split("[env: ").skip(1) {
        let name: String = part
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() {
            env.insert(name);
        }
    }
    (flags, env)
}

fn help_of(binary: &Path) -> String {
    let output = Command::new(binary)
        .arg("--help")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} --help: {e}", binary.display()));
    // nats-server prints its usage on stderr.
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn nats_server_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("NATS_SERVER_BIN") {
        return PathBuf::from(path);
    }
    let installed = peoplesync_testkit::workspace_root().join(".tools/bin/nats-server");
    if installed.exists() {
        installed
    } else {
        PathBuf::from("nats-server")
    }
}

/// What every program of the image (and nats-server) accepts, from the built binaries.
fn accepted_by_the_binaries() -> BTreeMap<String, Accepts> {
    let mut accepts = BTreeMap::new();
    for program in [
        "sage-extractor",
        "oomnitza-loader",
        "sage-people-sim",
        "oomnitza-sim",
    ] {
        let (flags, env) = parse_help(&help_of(&peoplesync_testkit::bin_path(program)));
        accepts.insert(
            program.to_owned(),
            Accepts {
                env,
                env_pattern: None,
                flags,
            },
        );
    }
    let services: [(&str, &[&str], Option<EnvPattern>); 2] = [
        (
            "sage-extractor",
            peoplesync_extractor::config::ENV_VARS,
            Some(is_credential_set_secret),
        ),
        ("oomnitza-loader", peoplesync_loader::config::ENV_VARS, None),
    ];
    for (program, vars, pattern) in services {
        let entry = accepts.get_mut(program).expect("service help read above");
        entry.env.extend(vars.iter().map(|v| (*v).to_owned()));
        entry.env_pattern = pattern;
    }
    let (flags, _) = parse_help(&help_of(&nats_server_binary()));
    accepts.insert(
        NATS_SERVER.to_owned(),
        Accepts {
            flags,
            ..Accepts::default()
        },
    );
    accepts
}

// --- reading what the deployment files give --------------------------------------------------

fn text(value: &Value) -> Option<&str> {
    value.as_str()
}

fn strings(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::Sequence(items)) => items
            .iter()
            .filter_map(|v| match v {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
            .collect(),
        Some(Value::String(s)) => s.split_whitespace().map(str::to_owned).collect(),
        _ => Vec::new(),
    }
}

fn flag_names<'a>(args: impl IntoIterator<Item = &'a String>) -> BTreeSet<String> {
    args.into_iter()
        .filter(|a| a.starts_with("--"))
        .map(|a| a.split('=').next().unwrap_or_default().to_owned())
        .collect()
}

/// Variable names of an env file (`NAME=value`), commented-out examples included: an operator
/// uncommenting one should get a variable that works.
fn env_file_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .map(|line| line.trim().trim_start_matches('#').trim())
        .filter_map(|line| line.split_once('='))
        .map(|(name, _)| name.trim().trim_start_matches("export ").to_owned())
        .filter(|name| {
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        })
        .collect()
}

fn yaml_documents(text: &str) -> Result<Vec<Value>, String> {
    let mut documents = Vec::new();
    for document in serde_norway::Deserializer::from_str(text) {
        let mut value = Value::deserialize(document).map_err(|e| e.to_string())?;
        value.apply_merge().map_err(|e| e.to_string())?;
        if !value.is_null() {
            documents.push(value);
        }
    }
    Ok(documents)
}

/// The usages of a compose file. `root` resolves env files; `default_program` is the image's
/// CMD, for services of the peoplesync image without a command.
fn compose_usages(source: &str, root: &Path, default_program: &str) -> Result<Vec<Usage>, String> {
    let compose = yaml_documents(source)?
        .into_iter()
        .next()
        .ok_or("empty compose file")?;
    let Some(services) = compose.get("services").and_then(Value::as_mapping) else {
        return Err("no services".into());
    };
    let mut usages = Vec::new();
    for (name, service) in services {
        let name = text(name).unwrap_or_default();
        let command = strings(service.get("command"));
        let image = service.get("image").and_then(text).unwrap_or_default();
        let ours = service.get("build").is_some() || image.contains("peoplesync");
        let mut usage = Usage {
            place: format!("docker-compose.yml service {name}"),
            ..Usage::default()
        };
        if image.starts_with("nats:") || image.starts_with("nats@") {
            // nats-server's own flags; its environment is not ours to check.
            usage.program = NATS_SERVER.to_owned();
            usage.flags = flag_names(&command);
            usages.push(usage);
            continue;
        }
        if !ours {
            continue; // third-party images (Prometheus, Grafana, the NATS exporter)
        }
        usage.program = command
            .first()
            .cloned()
            .unwrap_or_else(|| default_program.to_owned());
        usage.flags = flag_names(command.iter().skip(1));
        match service.get("environment") {
            Some(Value::Mapping(vars)) => {
                usage
                    .env
                    .extend(vars.keys().filter_map(text).map(str::to_owned));
            }
            Some(Value::Sequence(vars)) => usage.env.extend(
                vars.iter()
                    .filter_map(text)
                    .map(|v| v.split('=').next().unwrap_or_default().to_owned()),
            ),
            _ => {}
        }
        let env_files: Vec<String> = match service.get("env_file") {
            Some(Value::String(path)) => vec![path.clone()],
            Some(Value::Sequence(entries)) => entries
                .iter()
                .filter_map(|e| {
                    text(e)
                        .map(str::to_owned)
                        .or_else(|| e.get("path").and_then(text).map(str::to_owned))
                })
                .collect(),
            _ => Vec::new(),
        };
        for file in env_files {
            let path = root.join(&file);
            let example = root.join(format!("{file}.example"));
            let contents = std::fs::read_to_string(&path)
                .or_else(|_| std::fs::read_to_string(&example))
                .map_err(|_| {
                    format!(
                        "{}: env file {file} (or {file}.example) is missing",
                        usage.place
                    )
                })?;
            usage.env.extend(env_file_names(&contents));
        }
        usages.push(usage);
    }
    Ok(usages)
}

/// The pod specs of a Kubernetes object (workloads, CronJobs, bare Pods).
fn pod_specs(document: &Value) -> Vec<&Value> {
    let spec = document.get("spec");
    [
        spec.and_then(|s| s.get("template"))
            .and_then(|t| t.get("spec")),
        spec.and_then(|s| s.get("jobTemplate"))
            .and_then(|j| j.get("spec"))
            .and_then(|s| s.get("template"))
            .and_then(|t| t.get("spec")),
        (document.get("kind").and_then(text) == Some("Pod"))
            .then_some(spec)
            .flatten(),
    ]
    .into_iter()
    .flatten()
    .collect()
}

fn containers(pod: &Value) -> impl Iterator<Item = &Value> {
    ["initContainers", "containers"]
        .into_iter()
        .filter_map(|key| pod.get(key).and_then(Value::as_sequence))
        .flatten()
}

/// The usages of every Kubernetes file given (`(path, text)`, all documents each, patches
/// included). envFrom ConfigMaps are resolved against the ConfigMaps and kustomize
/// `configMapGenerator`s found in the same files; patch containers without a command belong to
/// the program of the container of the same name.
fn kubernetes_usages(
    files: &[(String, String)],
    default_program: &str,
) -> Result<Vec<Usage>, String> {
    let mut documents = Vec::new();
    for (path, contents) in files {
        for document in yaml_documents(contents).map_err(|e| format!("{path}: {e}"))? {
            documents.push((path.clone(), document));
        }
    }
    let mut config_maps: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (path, document) in &documents {
        match document.get("kind").and_then(text) {
            Some("ConfigMap") => {
                let name = document
                    .get("metadata")
                    .and_then(|m| m.get("name"))
                    .and_then(text)
                    .unwrap_or_default();
                let keys = document
                    .get("data")
                    .and_then(Value::as_mapping)
                    .map(|d| d.keys().filter_map(text).map(str::to_owned).collect())
                    .unwrap_or_default();
                config_maps
                    .entry(name.to_owned())
                    .or_default()
                    .extend::<BTreeSet<String>>(keys);
            }
            Some("Kustomization") => {
                let dir = Path::new(path).parent().unwrap_or(Path::new("."));
                for generator in document
                    .get("configMapGenerator")
                    .and_then(Value::as_sequence)
                    .into_iter()
                    .flatten()
                {
                    let name = generator.get("name").and_then(text).unwrap_or_default();
                    let keys = config_maps.entry(name.to_owned()).or_default();
                    for literal in strings(generator.get("literals")) {
                        keys.insert(literal.split('=').next().unwrap_or_default().to_owned());
                    }
                    for file in strings(generator.get("envs")) {
                        let contents = std::fs::read_to_string(dir.join(&file))
                            .map_err(|e| format!("{path}: envs file {file}: {e}"))?;
                        keys.extend(env_file_names(&contents));
                    }
                    for file in strings(generator.get("files")) {
                        let key = file.split('=').next().unwrap_or_default();
                        let key = Path::new(key)
                            .file_name()
                            .and_then(|n| n.to_str())
                            .unwrap_or(key);
                        keys.insert(key.to_owned());
                    }
                }
            }
            _ => {}
        }
    }
    let mut program_of_container: BTreeMap<String, String> = BTreeMap::new();
    for (_, document) in &documents {
        for pod in pod_specs(document) {
            for container in containers(pod) {
                if let (Some(name), Some(program)) = (
                    container.get("name").and_then(text),
                    strings(container.get("command")).first(),
                ) {
                    program_of_container.insert(name.to_owned(), program.clone());
                }
            }
        }
    }
    let mut usages = Vec::new();
    for (path, document) in &documents {
        let object = format!(
            "{} {}",
            document.get("kind").and_then(text).unwrap_or("?"),
            document
                .get("metadata")
                .and_then(|m| m.get("name"))
                .and_then(text)
                .unwrap_or("?")
        );
        for pod in pod_specs(document) {
            for container in containers(pod) {
                let name = container.get("name").and_then(text).unwrap_or_default();
                let image = container.get("image").and_then(text);
                let command = strings(container.get("command"));
                let args = strings(container.get("args"));
                let mut flags_from: Vec<String> = command.iter().skip(1).cloned().collect();
                let program = if let Some(program) = command.first() {
                    flags_from.extend(args.iter().cloned());
                    program.clone()
                } else if image.is_some_and(|i| !i.contains("peoplesync")) {
                    continue; // a third-party sidecar
                } else if let Some(program) =
                    args.first().filter(|a| PROGRAMS.contains(&a.as_str()))
                {
                    flags_from.extend(args.iter().skip(1).cloned());
                    program.clone()
                } else {
                    flags_from.extend(args.iter().cloned());
                    match (image, program_of_container.get(name)) {
                        (None, Some(program)) => program.clone(), // a patch
                        _ => default_program.to_owned(),
                    }
                };
                let mut usage = Usage {
                    place: format!("{path}: {object} container {name}"),
                    program,
                    flags: flag_names(&flags_from),
                    ..Usage::default()
                };
                for var in container
                    .get("env")
                    .and_then(Value::as_sequence)
                    .into_iter()
                    .flatten()
                {
                    if let Some(var) = var.get("name").and_then(text) {
                        usage.env.insert(var.to_owned());
                    }
                }
                for source in container
                    .get("envFrom")
                    .and_then(Value::as_sequence)
                    .into_iter()
                    .flatten()
                {
                    let prefix = source.get("prefix").and_then(text).unwrap_or_default();
                    if let Some(map) = source
                        .get("configMapRef")
                        .and_then(|r| r.get("name"))
                        .and_then(text)
                    {
                        match config_maps.get(map) {
                            Some(keys) => usage
                                .env
                                .extend(keys.iter().map(|k| format!("{prefix}{k}"))),
                            None => usage.unresolved.push(format!(
                                "envFrom ConfigMap {map} is not defined in deploy/kubernetes"
                            )),
                        }
                    }
                    if let Some(secret) = source
                        .get("secretRef")
                        .and_then(|r| r.get("name"))
                        .and_then(text)
                    {
                        usage.unresolved.push(format!(
                            "envFrom Secret {secret}: its keys cannot be checked; mount secrets as files and name them in env"
                        ));
                    }
                }
                usages.push(usage);
            }
        }
    }
    Ok(usages)
}

/// The Dockerfile's `ENV` names and the program its `CMD` runs.
fn dockerfile_env_and_cmd(dockerfile: &str) -> (BTreeSet<String>, Option<String>) {
    let joined = dockerfile.replace("\\\n", " ");
    let mut env = BTreeSet::new();
    let mut cmd = None;
    for line in joined.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("ENV ") {
            for assignment in rest.split_whitespace() {
                if let Some((name, _)) = assignment.split_once('=') {
                    env.insert(name.to_owned());
                }
            }
        } else if let Some(rest) = line.strip_prefix("CMD ") {
            cmd = serde_json::from_str::<Vec<String>>(rest)
                .ok()
                .and_then(|c| c.into_iter().next())
                .or_else(|| rest.split_whitespace().next().map(str::to_owned));
        }
    }
    (env, cmd)
}

/// Every problem in `usages`, one line each, naming the file, the program and the name.
fn check(usages: &[Usage], accepts: &BTreeMap<String, Accepts>) -> Vec<String> {
    let mut problems = Vec::new();
    for usage in usages {
        problems.extend(
            usage
                .unresolved
                .iter()
                .map(|u| format!("{}: {u}", usage.place)),
        );
        let Some(accepted) = accepts.get(&usage.program) else {
            problems.push(format!(
                "{}: runs {:?}, which is not a program of the image ({})",
                usage.place,
                usage.program,
                PROGRAMS.join(", ")
            ));
            continue;
        };
        for var in usage.env.iter().filter(|v| !accepted.reads(v)) {
            problems.push(format!(
                "{}: {} does not read environment variable {var}",
                usage.place, usage.program
            ));
        }
        for flag in usage.flags.iter().filter(|f| !accepted.flags.contains(*f)) {
            problems.push(format!(
                "{}: {} has no flag {flag}",
                usage.place, usage.program
            ));
        }
    }
    problems
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn files_under(dir: &Path, extensions: &[&str]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| extensions.contains(&e))
            {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

fn kubernetes_files(root: &Path) -> Vec<(String, String)> {
    files_under(&root.join("deploy/kubernetes"), &["yaml", "yml"])
        .into_iter()
        .map(|path| {
            let shown = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .display()
                .to_string();
            (shown, read(&path))
        })
        .collect()
}

// --- the checks on the real files ------------------------------------------------------------

#[test]
fn every_env_var_and_flag_in_compose_and_kubernetes_is_one_the_programs_accept() {
    let root = peoplesync_testkit::workspace_root();
    let accepts = accepted_by_the_binaries();
    let (_, cmd) = dockerfile_env_and_cmd(&read(&root.join("Dockerfile")));
    let default_program = cmd.expect("the Dockerfile has a CMD");

    let compose = compose_usages(
        &read(&root.join("docker-compose.yml")),
        &root,
        &default_program,
    )
    .expect("docker-compose.yml parses");
    let kubernetes = kubernetes_usages(&kubernetes_files(&root), &default_program)
        .expect("the Kubernetes manifests parse");
    assert!(
        compose
            .iter()
            .filter(|u| u.program == "oomnitza-loader")
            .count()
            == 1
            && compose.iter().any(|u| u.program == "sage-extractor"),
        "the checker found the services in docker-compose.yml: {compose:?}"
    );
    assert!(
        kubernetes
            .iter()
            .any(|u| u.program == "oomnitza-loader" && u.env.contains("NATS_URL")),
        "the checker resolved the loader's envFrom ConfigMap: {kubernetes:?}"
    );

    let mut usages = compose;
    usages.extend(kubernetes);
    let problems = check(&usages, &accepts);
    assert!(
        problems.is_empty(),
        "deployment files give programs settings they do not read:\n{}",
        problems.join("\n")
    );
}

#[test]
fn dockerfile_env_is_read_by_both_services_and_its_cmd_is_a_program() {
    let root = peoplesync_testkit::workspace_root();
    let (env, cmd) = dockerfile_env_and_cmd(&read(&root.join("Dockerfile")));
    assert!(env.contains("PEOPLESYNC_HTTP_LISTEN"), "{env:?}");
    for var in &env {
        assert!(
            peoplesync_loader::config::ENV_VARS.contains(&var.as_str())
                && peoplesync_extractor::config::ENV_VARS.contains(&var.as_str()),
            "the Dockerfile sets {var}, which not both services read"
        );
    }
    let cmd = cmd.expect("CMD");
    assert!(PROGRAMS.contains(&cmd.as_str()), "CMD runs {cmd}");
}

#[test]
fn shipped_service_and_integration_configs_load() {
    let root = peoplesync_testkit::workspace_root();
    let configs = files_under(&root.join("deploy"), &["toml"]);
    assert!(configs.len() >= 5, "{configs:?}");
    for path in configs {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let result = match name {
            "loader.toml" => peoplesync_loader::LoaderConfig::load(Some(&path))
                .map(drop)
                .map_err(|e| e.to_string()),
            "extractor.toml" => peoplesync_extractor::ExtractorConfig::load(Some(&path))
                .map(drop)
                .map_err(|e| e.to_string()),
            _ => peoplesync_core::IntegrationConfig::from_toml(&read(&path))
                .map(drop)
                .map_err(|e| e.to_string()),
        };
        if let Err(err) = result {
            panic!("{} does not load: {err}", path.display());
        }
    }
}

#[test]
fn the_compose_demo_tenant_has_the_custom_fields_of_the_default_integration() {
    let root = peoplesync_testkit::workspace_root();
    let compose = yaml_documents(&read(&root.join("docker-compose.yml"))).expect("parses");
    let configured =
        compose[0]["services"]["oomnitza-sim"]["environment"]["OOMNITZA_SIM_CUSTOM_FIELDS"]
            .as_str()
            .expect("OOMNITZA_SIM_CUSTOM_FIELDS is set")
            .trim()
            .to_owned();
    let expected: Vec<String> = peoplesync_core::default_custom_fields()
        .into_iter()
        .map(|f| {
            format!(
                "{}:{}{}",
                f.id,
                f.label,
                if f.unique { ":unique" } else { "" }
            )
        })
        .collect();
    assert_eq!(configured, expected.join(","));
}

#[test]
fn the_kubernetes_base_ships_the_default_integration_config() {
    let root = peoplesync_testkit::workspace_root();
    let shipped = read(&root.join("deploy/kubernetes/base/config/sage-people.toml"));
    let shipped = peoplesync_core::IntegrationConfig::from_toml(&shipped).expect("loads");
    assert_eq!(
        shipped.to_toml(),
        peoplesync_core::IntegrationConfig::default_for("sage-people").to_toml(),
        "regenerate it: oomnitza-loader --print-default-integration sage-people"
    );
}

// --- the checker on bad samples ----------------------------------------------------------------

fn sample_accepts() -> BTreeMap<String, Accepts> {
    let service = |env: &[&str], flags: &[&str], pattern: Option<EnvPattern>| Accepts {
        env: env.iter().map(|v| (*v).to_owned()).collect(),
        env_pattern: pattern,
        flags: flags.iter().map(|v| (*v).to_owned()).collect(),
    };
    BTreeMap::from([
        (
            "oomnitza-loader".to_owned(),
            service(
                &["NATS_URL", "RUST_LOG", "CONTROL_TOKEN_FILE"],
                &["--config", "--integration"],
                None,
            ),
        ),
        (
            "sage-extractor".to_owned(),
            service(&["NATS_URL"], &["--config"], Some(is_credential_set_secret)),
        ),
        (NATS_SERVER.to_owned(), service(&[], &["--jetstream"], None)),
    ])
}

const GOOD_COMPOSE: &str = r#"
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
"#;

#[test]
fn checker_accepts_a_correct_compose_file() {
    let usages = compose_usages(GOOD_COMPOSE, Path::new("."), "oomnitza-loader").unwrap();
    assert_eq!(usages.len(), 3, "grafana is not ours: {usages:?}");
    assert_eq!(check(&usages, &sample_accepts()), Vec::<String>::new());
}

#[test]
fn checker_names_a_misspelt_env_var_a_misspelt_flag_and_an_unknown_program_in_compose() {
    let bad = GOOD_COMPOSE
        .replace("      NATS_URL: nats", "      NATS_ULR: nats")
        .replace("--config=", "--confg=")
        .replace("command: sage-extractor", "command: sage-extracter")
        .replace(r#"["--jetstream"]"#, r#"["--jetstrem"]"#);
    let problems = check(
        &compose_usages(&bad, Path::new("."), "oomnitza-loader").unwrap(),
        &sample_accepts(),
    );
    let all = problems.join("\n");
    assert_eq!(problems.len(), 4, "{all}");
    assert!(
        all.contains("service loader: oomnitza-loader does not read environment variable NATS_ULR"),
        "{all}"
    );
    assert!(all.contains("oomnitza-loader has no flag --confg"), "{all}");
    assert!(all.contains(r#"runs "sage-extracter""#), "{all}");
    assert!(all.contains("nats-server has no flag --jetstrem"), "{all}");
}

#[test]
fn checker_reads_env_files_and_their_commented_examples() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("loader.env.example"),
        "# a comment\nRUST_LOG=info\n# NATS_URRL=nats://example\n",
    )
    .unwrap();
    let compose = "services:\n  loader:\n    build: .\n    command: [oomnitza-loader]\n    env_file:\n      - path: loader.env\n        required: false\n";
    let problems = check(
        &compose_usages(compose, dir.path(), "oomnitza-loader").unwrap(),
        &sample_accepts(),
    );
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("NATS_URRL"), "{problems:?}");
}

const GOOD_KUBERNETES: &str = r#"
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
"#;

const KUSTOMIZATION_AND_PATCH: &str = r#"
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
configMapGenerator:
  - name: generated-env
    literals:
      - RUST_LOG=debug
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
          envFrom:
            - configMapRef:
                name: generated-env
          env:
            - name: RUST_LOG
              value: info
"#;

fn k8s(files: &[(&str, &str)]) -> Vec<Usage> {
    let files: Vec<(String, String)> = files
        .iter()
        .map(|(p, t)| ((*p).to_owned(), (*t).to_owned()))
        .collect();
    kubernetes_usages(&files, "oomnitza-loader").unwrap()
}

#[test]
fn checker_accepts_correct_manifests_with_envfrom_generators_and_patches() {
    let usages = k8s(&[
        ("base.yaml", GOOD_KUBERNETES),
        ("overlay/kustomization.yaml", KUSTOMIZATION_AND_PATCH),
    ]);
    assert_eq!(usages.len(), 2, "the sidecar is not ours: {usages:?}");
    assert!(usages[0].env.contains("NATS_URL"), "{usages:?}");
    assert_eq!(
        usages[1].program, "oomnitza-loader",
        "the patch container is the loader's"
    );
    assert_eq!(check(&usages, &sample_accepts()), Vec::<String>::new());
}

#[test]
fn checker_names_misspellings_in_env_envfrom_keys_args_and_patches() {
    let base = GOOD_KUBERNETES
        .replace("  NATS_URL: nats", "  NATS_URLL: nats")
        .replace(r#"args: ["--config""#, r#"args: ["--conifg""#)
        .replace("- name: CONTROL_TOKEN_FILE", "- name: CONTROL_TOKENFILE");
    let patch = KUSTOMIZATION_AND_PATCH.replace("- RUST_LOG=debug", "- RUST_LGO=debug");
    let problems = check(
        &k8s(&[("base.yaml", &base), ("p/kustomization.yaml", &patch)]),
        &sample_accepts(),
    );
    let all = problems.join("\n");
    for expected in ["NATS_URLL", "--conifg", "CONTROL_TOKENFILE", "RUST_LGO"] {
        assert!(all.contains(expected), "{expected} is not named in:\n{all}");
    }
    assert_eq!(problems.len(), 4, "{all}");
}

#[test]
fn checker_refuses_envfrom_it_cannot_resolve() {
    let bad = GOOD_KUBERNETES.replace(
        "name: shared-env\n          env:",
        "name: nowhere\n          env:",
    );
    let problems = check(&k8s(&[("base.yaml", &bad)]), &sample_accepts());
    assert!(
        problems
            .iter()
            .any(|p| p.contains("envFrom ConfigMap nowhere")),
        "{problems:?}"
    );
}

#[test]
fn credential_set_secrets_are_recognised_by_shape_only() {
    assert!(is_credential_set_secret(
        "SAGE_PEOPLE_EMEA_PROD_CLIENT_SECRET"
    ));
    assert!(is_credential_set_secret("SAGE_PEOPLE_US2_PRIVATE_KEY_FILE"));
    assert!(!is_credential_set_secret("SAGE_PEOPLE_CLIENT_SECRET_FIEL"));
    assert!(!is_credential_set_secret("SAGE_PEOPLE__PASSWORD"));
    assert!(!is_credential_set_secret("SAGE_PEOPLE_emea_PASSWORD"));
}

#[test]
fn help_parsing_finds_clap_flags_and_env_and_nats_server_flags() {
    let clap = "Options:\n      --config <CONFIG>  TOML file [env: PEOPLESYNC_LOADER_CONFIG=]\n  -h, --help  Print help\n";
    let (flags, env) = parse_help(clap);
    assert!(
        flags.contains("--config") && flags.contains("--help"),
        "{flags:?}"
    );
    assert!(env.contains("PEOPLESYNC_LOADER_CONFIG"), "{env:?}");
    let nats = "    -sd, --store_dir <dir>           Set the storage directory\n    -a, --addr, --net <host>\n";
    let (flags, _) = parse_help(nats);
    assert!(
        flags.contains("--store_dir") && flags.contains("--addr") && flags.contains("--net"),
        "{flags:?}"
    );
}

// --- the operations endpoint of a running loader ---------------------------------------------

/// A service binary whose stderr (JSON logs) is read for its `http listening on ADDR` line;
/// killed on drop.
pub(crate) struct Running {
    child: std::process::Child,
    http: std::net::SocketAddr,
}

impl Running {
    pub(crate) fn start(program: &str, envs: &[(&str, &str)]) -> Running {
        let mut child = Command::new(peoplesync_testkit::bin_path(program))
            .envs(envs.iter().copied())
            .env("PEOPLESYNC_HTTP_LISTEN", "127.0.0.1:0")
            .env("LOG_FORMAT", "json")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        let show = std::env::var_os("PEOPLESYNC_TEST_LOGS").is_some();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if show {
                    eprintln!("{line}");
                }
                let Ok(entry) = serde_json::from_str::<serde_json::Value>(&line) else {
                    continue;
                };
                if let Some(addr) = entry["message"]
                    .as_str()
                    .and_then(|m| m.strip_prefix("http listening on "))
                    .and_then(|a| a.parse().ok())
                {
                    let _ = tx.send(addr);
                }
            }
        });
        let http = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                panic!("{program} did not log `http listening on ADDR` within 30s");
            }
        };
        Running { child, http }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) async fn get(url: &str) -> Option<(u16, String, String)> {
    let response = reqwest::get(url).await.ok()?;
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    Some((status, content_type, response.text().await.ok()?))
}

async fn wait_for_readyz(service: &Running, status: u16, what: &str) -> serde_json::Value {
    let url = service.url("/readyz");
    peoplesync_testkit::wait_for(what, Duration::from_secs(30), || {
        let url = url.clone();
        async move {
            let (code, _, body) = get(&url).await?;
            (code == status)
                .then(|| serde_json::from_str(&body).ok())
                .flatten()
        }
    })
    .await
}

#[tokio::test]
async fn loader_serves_health_readiness_and_metrics_and_readiness_follows_nats() {
    let mut nats = peoplesync_testkit::NatsServer::start();
    let oomnitza_config = peoplesync_sims::oomnitza::OomnitzaConfig::default();
    let oomnitza = peoplesync_sims::oomnitza::OomnitzaSim::spawn(oomnitza_config.clone())
        .await
        .expect("oomnitza sim");
    let oomnitza_url = oomnitza.url();
    let loader = Running::start(
        "oomnitza-loader",
        &[
            ("NATS_URL", nats.url()),
            ("OOMNITZA_URL", &oomnitza_url),
            ("OOMNITZA_API_TOKEN", &oomnitza_config.api_token),
            ("CONTROL_LISTEN", "127.0.0.1:0"),
            ("CONTROL_TOKEN", "deploy-test-control-token-0123456789"),
            ("RUST_LOG", "info"),
        ],
    );

    let ready = wait_for_readyz(&loader, 200, "the loader to be ready").await;
    assert_eq!(ready["checks"]["nats"], true, "{ready}");
    assert_eq!(ready["checks"]["consumer"], true, "{ready}");

    let (status, _, _) = get(&loader.url("/healthz"))
        .await
        .expect("/healthz answers");
    assert_eq!(status, 200);
    let (status, content_type, text) = get(&loader.url("/metrics"))
        .await
        .expect("/metrics answers");
    assert_eq!(status, 200);
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    crate::operator::assert_zero_initialised(peoplesync_runtime::metrics::Service::Loader, &text);

    nats.kill();
    let not_ready = wait_for_readyz(&loader, 503, "the loader to report NATS as not ready").await;
    assert_eq!(
        not_ready["not_ready"],
        serde_json::json!(["nats"]),
        "{not_ready}"
    );
    let (status, _, _) = get(&loader.url("/healthz"))
        .await
        .expect("/healthz answers");
    assert_eq!(
        status, 200,
        "alive while NATS is away, so Kubernetes does not restart it"
    );

    nats.restart();
    wait_for_readyz(
        &loader,
        200,
        "the loader to be ready again after NATS came back",
    )
    .await;
}

/// NATS, a Sage People simulator and an extractor reading it with the simulator's client
/// secret, or with `secret`.
async fn extractor_reading_a_sim(
    secret: Option<&str>,
) -> (
    peoplesync_testkit::NatsServer,
    peoplesync_sims::sage::SageSim,
    Running,
) {
    let nats = peoplesync_testkit::NatsServer::start();
    let sage_config = peoplesync_sims::sage::SageConfig::default();
    let sage = peoplesync_sims::sage::SageSim::spawn(sage_config.clone())
        .await
        .expect("sage sim");
    let sage_url = sage.url();
    let extractor = Running::start(
        "sage-extractor",
        &[
            ("NATS_URL", nats.url()),
            ("SAGE_PEOPLE_LOGIN_URL", &sage_url),
            ("SAGE_PEOPLE_CLIENT_ID", &sage_config.client_id),
            (
                "SAGE_PEOPLE_CLIENT_SECRET",
                secret.unwrap_or(&sage_config.client_secret),
            ),
            ("RUST_LOG", "info"),
        ],
    );
    (nats, sage, extractor)
}

#[tokio::test]
async fn extractor_serves_health_readiness_and_metrics_while_it_waits_for_its_schedule() {
    let (_nats, _sage, extractor) = extractor_reading_a_sim(None).await;

    let ready = wait_for_readyz(&extractor, 200, "the extractor to be ready").await;
    assert_eq!(ready["checks"]["nats"], true, "{ready}");
    let (status, _, _) = get(&extractor.url("/healthz"))
        .await
        .expect("/healthz answers");
    assert_eq!(status, 200);
    let (status, content_type, text) = get(&extractor.url("/metrics"))
        .await
        .expect("/metrics answers");
    assert_eq!(status, 200);
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    crate::operator::assert_zero_initialised(
        peoplesync_runtime::metrics::Service::Extractor,
        &text,
    );
}

/// Waits until `/readyz` answers 503 naming exactly `conditions` (NATS and the consumer come
/// up first; the credential check follows).
async fn wait_for_not_ready(service: &Running, conditions: &[&str]) {
    let url = service.url("/readyz");
    let expected = serde_json::json!(conditions);
    peoplesync_testkit::wait_for(
        &format!("/readyz to name only {conditions:?}"),
        Duration::from_secs(30),
        || {
            let url = url.clone();
            let expected = expected.clone();
            async move {
                let (code, _, body) = get(&url).await?;
                let body: serde_json::Value = serde_json::from_str(&body).ok()?;
                (code == 503 && body["not_ready"] == expected).then_some(())
            }
        },
    )
    .await;
}

#[tokio::test]
async fn a_refused_oomnitza_token_sets_credentials_failing_from_the_start_and_the_loader_stays_ready()
 {
    let nats = peoplesync_testkit::NatsServer::start();
    let oomnitza = peoplesync_sims::oomnitza::OomnitzaSim::spawn(
        peoplesync_sims::oomnitza::OomnitzaConfig::default(),
    )
    .await
    .expect("oomnitza sim");
    let oomnitza_url = oomnitza.url();
    let loader = Running::start(
        "oomnitza-loader",
        &[
            ("NATS_URL", nats.url()),
            ("OOMNITZA_URL", &oomnitza_url),
            ("OOMNITZA_API_TOKEN", "not-the-token"),
            ("RUST_LOG", "info"),
        ],
    );
    let metrics = loader.url("/metrics");
    peoplesync_testkit::wait_for(
        "credentials_failing to be set before any run",
        Duration::from_secs(30),
        || {
            let metrics = metrics.clone();
            async move {
                let (_, _, text) = get(&metrics).await?;
                text.lines()
                    .any(|l| {
                        l.starts_with("peoplesync_loader_credentials_failing") && l.ends_with(" 1")
                    })
                    .then_some(())
            }
        },
    )
    .await;
    // Still ready: its control plane must stay reachable to find out what is wrong.
    wait_for_readyz(&loader, 200, "the loader to stay ready").await;
}

#[tokio::test]
async fn a_refused_sage_people_secret_shows_on_the_extractors_readyz_from_the_start() {
    let (_nats, sage, extractor) = extractor_reading_a_sim(Some("not-the-secret")).await;
    // The condition is registered (not ready) before the check runs: wait for the check.
    peoplesync_testkit::wait_for(
        "the start-up check to ask for a token",
        Duration::from_secs(30),
        || async { (sage.stats().token_failures > 0).then_some(()) },
    )
    .await;
    wait_for_not_ready(&extractor, &["sage_people_credentials.sage-people"]).await;
    assert_eq!(
        sage.stats().token_failures,
        1,
        "one check, not a retry loop"
    );
}
