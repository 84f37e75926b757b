//! A three-node (or larger) JetStream cluster of `nats-server` child processes for one test:
//! each node on free client, route and monitoring ports, with its own store; routes between
//! all of them. A node can be killed (as a crash) and started again on the same ports and
//! store, and the monitoring endpoint says which node a client is connected to.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{free_port, nats};

/// A running cluster; every node is stopped and its store deleted when dropped.
pub struct NatsCluster {
    nodes: Vec<Node>,
    _dir: tempfile::TempDir,
    urls: String,
}

struct Node {
    child: Option<Child>,
    config: PathBuf,
    port: u16,
    monitor: u16,
    url: String,
}

impl NatsCluster {
    /// Starts `size` nodes (at least 3 for JetStream replicas 3) routed to each other, and
    /// waits until every node reports JetStream healthy (a meta leader is elected).
    pub fn start(size: usize) -> NatsCluster {
        let dir = tempfile::tempdir().expect("temp dir for the cluster");
        let ports: Vec<(u16, u16, u16)> = (0..size)
            .map(|_| (free_port(), free_port(), free_port()))
            .collect();
        let routes: Vec<String> = ports
            .iter()
            .map(|(_, route, _)| format!("nats-route://127.0.0.1:{route}"))
            .collect();
        let nodes: Vec<Node> = ports
            .iter()
            .enumerate()
            .map(|(i, &(port, route, monitor))| {
                let store = dir.path().join(format!("n{i}"));
                let config = dir.path().join(format!("n{i}.conf"));
                let text = format!(
                    "server_name: n{i}\nlisten: 127.0.0.1:{port}\nhttp: 127.0.0.1:{monitor}\n\
                     jetstream {{ store_dir: {store:?} }}\n\
                     cluster {{ name: peoplesync-test, listen: 127.0.0.1:{route}, routes: [{}] }}\n",
                    routes.join(", ")
                );
                std::fs::write(&config, text).expect("writing a node's configuration");
                Node {
                    child: None,
                    config,
                    port,
                    monitor,
                    url: format!("nats://127.0.0.1:{port}"),
                }
            })
            .collect();
        let urls = nodes
            .iter()
            .map(|n| n.url.as_str())
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = NatsCluster {
            nodes,
            _dir: dir,
            urls,
        };
        for i in 0..size {
            cluster.spawn(i);
        }
        for i in 0..size {
            cluster.wait_healthy(i, Duration::from_secs(60));
        }
        cluster.wait_formed(Duration::from_secs(60));
        cluster
    }

    /// Waits until the JetStream meta leader sees every other node as a current peer: before
    /// that, creating a stream with three replicas fails with "no suitable peers".
    fn wait_formed(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let others = self.nodes.len() - 1;
        loop {
            let formed = self.nodes.iter().enumerate().any(|(i, node)| {
                let Some((200, body)) = http_get(node.monitor, "/jsz") else {
                    return false;
                };
                let Ok(jsz) = serde_json::from_str::<serde_json::Value>(&body) else {
                    return false;
                };
                let meta = &jsz["meta_cluster"];
                let replicas = meta["replicas"].as_array().cloned().unwrap_or_default();
                meta["leader"].as_str() == Some(&format!("n{i}"))
                    && replicas.len() == others
                    && replicas.iter().all(|r| {
                        r["current"].as_bool() == Some(true) && r["offline"].as_bool() != Some(true)
                    })
            });
            if formed {
                return;
            }
            if Instant::now() >= deadline {
                panic!("the cluster's JetStream did not form within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Every node's client URL, comma separated: the seed list a service gets as `NATS_URL`.
    pub fn urls(&self) -> &str {
        &self.urls
    }

    /// The client URL of node `index`.
    pub fn url(&self, index: usize) -> &str {
        &self.nodes[index].url
    }

    /// Kills node `index` (SIGKILL, as a crash), keeping its store.
    pub fn kill(&mut self, index: usize) {
        if let Some(mut child) = self.nodes[index].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts node `index` again on its ports with its store, and waits until it is healthy.
    pub fn restart(&mut self, index: usize) {
        self.kill(index);
        self.spawn(index);
        self.wait_healthy(index, Duration::from_secs(60));
    }

    /// The nodes (indices) that hold at least one client connection named `name` (the name a
    /// client gives when it connects: `oomnitza-loader`, `sage-extractor`).
    pub fn nodes_with_client(&self, name: &str) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| {
                let Some((200, body)) = http_get(self.nodes[i].monitor, "/connz?limit=10000")
                else {
                    return false;
                };
                serde_json::from_str::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v.get("connections")?.as_array().cloned())
                    .is_some_and(|c| c.iter().any(|c| c["name"].as_str() == Some(name)))
            })
            .collect()
    }

    // The child is kept in `Node` and killed on drop.
    #[allow(clippy::zombie_processes)]
    fn spawn(&mut self, index: usize) {
        let node = &mut self.nodes[index];
        let child = Command::new(nats::binary())
            .arg("-c")
            .arg(&node.config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| nats::cannot_start(&e));
        node.child = Some(child);
    }

    fn wait_healthy(&self, index: usize, timeout: Duration) {
        let node = &self.nodes[index];
        let deadline = Instant::now() + timeout;
        loop {
            let listening = std::net::TcpStream::connect(("127.0.0.1", node.port)).is_ok();
            if listening && matches!(http_get(node.monitor, "/healthz"), Some((200, _))) {
                return;
            }
            if Instant::now() >= deadline {
                panic!("cluster node n{index} did not become healthy within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}

/// `GET path` on 127.0.0.1:`port` (HTTP/1.0, so the server closes the connection when done):
/// the status and the body, or `None` if nothing answers.
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    Some((status, body))
}
