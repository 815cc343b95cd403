//! Redis as deployed in production, on loopback: TLS-only with a private CA and client
//! certificates, ACL users with the default user off, a three-master cluster with a replica
//! each, a memory limit. Every server is a `redis-server` child process stopped by its PID
//! (through [`RedisServer`]'s drop); files live in a fresh directory under the system's temp.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use tower_oauth2::test_util::RedisServer;

/// A fresh directory for one test's files, removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("tower-oauth2-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    /// Write `contents` to `name` in it; the path.
    pub fn write(&self, name: &str, contents: &str) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, contents).unwrap();
        path.to_string_lossy().into_owned()
    }

    pub fn path(&self, name: &str) -> String {
        self.0.join(name).to_string_lossy().into_owned()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A port free on 127.0.0.1, with `port + 10000` free too (a cluster node's bus port).
pub fn free_port() -> u16 {
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if port < 55535 && std::net::TcpListener::bind(("127.0.0.1", port + 10000)).is_ok() {
            return port;
        }
    }
}

/// Start `redis-server` on `port` with `args`, or fail saying what to install.
pub fn start(port: u16, args: &[&str]) -> RedisServer {
    RedisServer::start_on_with_args(port, args).unwrap_or_else(|error| panic!("{error}"))
}

/// ACL users of [`acl_args`]: `app` may do everything, `noscript` everything but scripting.
pub const APP_PASSWORD: &str = "app-p4ss-word";
pub const NOSCRIPT_PASSWORD: &str = "nosc-p4ss-word";

/// The default user off, `app` with every command, `noscript` without `@scripting`.
pub fn acl_args() -> Vec<String> {
    [
        "--user default off".to_owned(),
        format!("--user app on >{APP_PASSWORD} ~* &* +@all"),
        format!("--user noscript on >{NOSCRIPT_PASSWORD} ~* &* +@all -@scripting"),
    ]
    .iter()
    .flat_map(|arg| arg.split(' ').map(str::to_owned).collect::<Vec<_>>())
    .collect()
}

/// A private CA, a server certificate for 127.0.0.1 signed by it, a client certificate signed
/// by it, and a second CA that signed nothing here.
pub struct Pki {
    pub ca_pem: String,
    pub other_ca_pem: String,
    pub server_pem: String,
    pub server_key_pem: String,
    pub client_pem: String,
    pub client_key_pem: String,
}

fn ca(name: &str) -> (String, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let certificate = params.self_signed(&key).unwrap();
    (certificate.pem(), Issuer::new(params, key))
}

pub fn pki() -> Pki {
    let (ca_pem, issuer) = ca("redis test CA");
    let (other_ca_pem, _) = ca("another CA");
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .unwrap()
        .signed_by(&server_key, &issuer)
        .unwrap();
    let client_key = KeyPair::generate().unwrap();
    let mut client_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    client_params
        .distinguished_name
        .push(DnType::CommonName, "fleet-member");
    let client = client_params.signed_by(&client_key, &issuer).unwrap();
    Pki {
        ca_pem,
        other_ca_pem,
        server_pem: server.pem(),
        server_key_pem: server_key.serialize_pem(),
        client_pem: client.pem(),
        client_key_pem: client_key.serialize_pem(),
    }
}

/// A TLS-only Redis (no plain port) requiring client certificates from `pki`'s CA, with the
/// ACL users of [`acl_args`]; its TLS port.
pub fn tls_redis(pki: &Pki, scratch: &Scratch) -> (RedisServer, u16) {
    let port = free_port();
    let cert = scratch.write("server.pem", &pki.server_pem);
    let key = scratch.write("server.key", &pki.server_key_pem);
    let ca = scratch.write("ca.pem", &pki.ca_pem);
    let port_arg = port.to_string();
    let mut args = vec![
        "--port",
        "0",
        "--tls-port",
        &port_arg,
        "--tls-cert-file",
        &cert,
        "--tls-key-file",
        &key,
        "--tls-ca-cert-file",
        &ca,
        "--tls-auth-clients",
        "yes",
    ];
    let acl = acl_args();
    args.extend(acl.iter().map(String::as_str));
    (start(port, &args), port)
}

/// A Redis Cluster of three masters with a replica each, nodes failing over after 1 s.
pub struct Cluster {
    pub nodes: Vec<RedisServer>,
    _scratch: Scratch,
}

impl Cluster {
    pub fn start() -> Cluster {
        let scratch = Scratch::new("cluster");
        let dir = scratch.0.to_string_lossy().into_owned();
        let nodes: Vec<RedisServer> = (0..6)
            .map(|_| {
                let port = free_port();
                let config = format!("nodes-{port}.conf");
                start(
                    port,
                    &[
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        &config,
                        "--cluster-node-timeout",
                        "1000",
                        // A replica fails over however long it was cut off, and syncs at
                        // once (the default waits 5 s for more replicas to sync together).
                        "--cluster-replica-validity-factor",
                        "0",
                        "--repl-diskless-sync-delay",
                        "0",
                        "--dir",
                        &dir,
                    ],
                )
            })
            .collect();
        let addresses: Vec<String> = nodes
            .iter()
            .map(|node| format!("127.0.0.1:{}", node.port()))
            .collect();
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .unwrap_or_else(|error| {
                panic!("cannot run redis-cli ({error}): install it, e.g. `apt-get install -y redis-tools`")
            });
        assert!(
            created.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&created.stdout)
        );
        let cluster = Cluster {
            nodes,
            _scratch: scratch,
        };
        cluster.wait_until_ok(&(0..6).collect::<Vec<_>>());
        cluster.wait_until_replicas_sync();
        cluster
    }

    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(|node| node.url()).collect()
    }

    /// `CLUSTER INFO` of node `i`.
    pub fn info(&self, i: usize) -> String {
        let client = redis::Client::open(self.nodes[i].url()).unwrap();
        let mut connection = client.get_connection().unwrap();
        redis::cmd("CLUSTER")
            .arg("INFO")
            .query(&mut connection)
            .unwrap()
    }

    /// Wait until each of `nodes` sees the cluster as healthy, at most 10 s.
    pub fn wait_until_ok(&self, nodes: &[usize]) {
        let deadline = Instant::now() + Duration::from_secs(10);
        for &i in nodes {
            while !self.info(i).contains("cluster_state:ok") {
                assert!(Instant::now() < deadline, "cluster never became ok");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// Wait until every replica has synced with its master, at most 10 s: a master killed
    /// before that leaves a replica with nothing to take over with.
    pub fn wait_until_replicas_sync(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        for node in &self.nodes {
            let client = redis::Client::open(node.url()).unwrap();
            let mut connection = client.get_connection().unwrap();
            loop {
                let info: String = redis::cmd("INFO")
                    .arg("replication")
                    .query(&mut connection)
                    .unwrap();
                if info.contains("role:master") || info.contains("master_link_status:up") {
                    break;
                }
                assert!(Instant::now() < deadline, "a replica never synced: {info}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// The node serving `key`'s slot as master.
    pub fn master_of(&self, key: &str) -> usize {
        let client = redis::Client::open(self.nodes[0].url()).unwrap();
        let mut connection = client.get_connection().unwrap();
        let slot: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut connection)
            .unwrap();
        let slots: Vec<(u16, u16, (String, u16))> = {
            let raw: Vec<redis::Value> = redis::cmd("CLUSTER")
                .arg("SLOTS")
                .query(&mut connection)
                .unwrap();
            raw.into_iter()
                .map(|range| {
                    let redis::Value::Array(parts) = range else {
                        panic!("CLUSTER SLOTS: {range:?}")
                    };
                    let start: u16 = redis::from_redis_value(parts[0].clone()).unwrap();
                    let end: u16 = redis::from_redis_value(parts[1].clone()).unwrap();
                    let redis::Value::Array(master) = parts[2].clone() else {
                        panic!("CLUSTER SLOTS master: {:?}", parts[2])
                    };
                    let host: String = redis::from_redis_value(master[0].clone()).unwrap();
                    let port: u16 = redis::from_redis_value(master[1].clone()).unwrap();
                    (start, end, (host, port))
                })
                .collect()
        };
        let (_, _, (_, port)) = slots
            .into_iter()
            .find(|(start, end, _)| (*start..=*end).contains(&slot))
            .expect("every slot is served");
        self.nodes
            .iter()
            .position(|node| node.port() == port)
            .expect("a node of ours")
    }
}

/// The password of the Sentinel-managed master and replica.
pub const SENTINEL_MASTER_PASSWORD: &str = "s3ntinel-master-pw";

/// A `redis-server --sentinel` child process, killed by its PID when dropped.
pub struct Sentinel {
    child: std::process::Child,
    pub port: u16,
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A master and its replica (password [`SENTINEL_MASTER_PASSWORD`]) watched by one sentinel
/// (quorum 1, master down after 500 ms), once the sentinel knows the replica.
pub fn sentinel_pair(scratch: &Scratch) -> (RedisServer, RedisServer, Sentinel) {
    use std::io::{BufRead, BufReader};

    let pw = SENTINEL_MASTER_PASSWORD;
    let common = [
        "--requirepass",
        pw,
        "--masterauth",
        pw,
        "--repl-diskless-sync-delay",
        "0",
    ];
    let master_port = free_port();
    let master = start(master_port, &common);
    let replica_port = free_port();
    let master_port_arg = master_port.to_string();
    let mut replica_args = common.to_vec();
    replica_args.extend(["--replicaof", "127.0.0.1", &master_port_arg]);
    let replica = start(replica_port, &replica_args);
    wait_for_sync(&format!("redis://:{pw}@127.0.0.1:{replica_port}/"));

    let port = free_port();
    let config = scratch.write(
        "sentinel.conf",
        &format!(
            "port {port}\nbind 127.0.0.1\nsentinel monitor mymaster 127.0.0.1 {master_port} 1\n\
             sentinel auth-pass mymaster {pw}\nsentinel down-after-milliseconds mymaster 500\n\
             sentinel failover-timeout mymaster 2000\n"
        ),
    );
    let mut child = Command::new("redis-server")
        .args([config.as_str(), "--sentinel"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|error| {
            panic!("cannot start redis-server --sentinel ({error}): install redis-server")
        });
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let sentinel = Sentinel { child, port };
    // Its log, read on a thread of its own (so that it never blocks on a full pipe), says when
    // it has found the replica it would promote.
    let (found, knows_replica) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            if line.contains("+slave ") {
                let _ = found.send(());
            }
        }
    });
    knows_replica
        .recv_timeout(Duration::from_secs(10))
        .expect("the sentinel found the replica within 10 s");
    (master, replica, sentinel)
}

/// Wait until the replica at `url` has synced with its master, at most 10 s.
fn wait_for_sync(url: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut connection = redis::Client::open(url).unwrap().get_connection().unwrap();
    loop {
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query(&mut connection)
            .unwrap();
        if info.contains("master_link_status:up") {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the replica never synced: {info}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
