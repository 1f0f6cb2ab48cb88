//! Test support shared by runnel's Kafka tests (connectors, jobs) : a real Kafka-API broker
//! for the tests (`RUNNEL_KAFKA_BOOTSTRAP`, or a tansu of their own, shared by the tests that
//! run at the same time), and the plain rdkafka helpers every check needs (topic creation,
//! unique names, blocking on the admin client's futures).

use std::future::Future;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::pin::pin;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Wake};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::ClientConfig;

/// A tansu process started by the tests; killed when dropped.
struct Tansu {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The broker the tests use: `RUNNEL_KAFKA_BOOTSTRAP`, or a tansu of their own.
pub struct Broker {
    /// `host:port` of the broker.
    pub bootstrap: String,
    _tansu: Option<Tansu>,
}

/// The shared broker: tests that run at the same time share one tansu, which stops when the
/// last of them is done.
pub fn broker() -> Arc<Broker> {
    static SHARED: Mutex<Weak<Broker>> = Mutex::new(Weak::new());
    let mut slot = SHARED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(b) = slot.upgrade() {
        return b;
    }
    let b = Arc::new(start_broker());
    *slot = Arc::downgrade(&b);
    b
}

fn find_tansu() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(cargo) = std::env::var_os("CARGO_HOME") {
        dirs.push(PathBuf::from(cargo).join("bin"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".cargo/bin"));
    }
    dirs.into_iter()
        .map(|d| d.join("tansu"))
        .find(|p| p.is_file())
}

/// A TCP port on 127.0.0.1 that nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn start_broker() -> Broker {
    if let Ok(b) = std::env::var("RUNNEL_KAFKA_BOOTSTRAP") {
        if !b.trim().is_empty() {
            return Broker {
                bootstrap: b.trim().to_string(),
                _tansu: None,
            };
        }
    }
    let Some(tansu) = find_tansu() else {
        panic!(
            "the Kafka tests need a broker: tansu is not installed (not on PATH nor in \
             ~/.cargo/bin). Install it with `scripts/dev-broker install` (that is: cargo install \
             tansu --version =0.6.0 --locked --features dynostore,libsql), or set \
             RUNNEL_KAFKA_BOOTSTRAP=host:port to use a running Kafka broker."
        );
    };
    let dir = tempfile::tempdir().expect("a temp dir");
    let log_path = dir.path().join("tansu.log");
    let log = std::fs::File::create(&log_path).expect("tansu log");
    let port = free_port();
    let url = format!("tcp://127.0.0.1:{port}");
    let child = Command::new(&tansu)
        .args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
        ])
        .args(["--storage-engine", "memory://tansu/"])
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", tansu.display()));
    let mut guard = Tansu { child, _dir: dir };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        if let Ok(Some(status)) = guard.child.try_wait() {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            panic!("tansu exited ({status}) before accepting connections; its log:\n{log}");
        }
        if Instant::now() > deadline {
            panic!("tansu did not accept connections on 127.0.0.1:{port} within 30 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Broker {
        bootstrap: format!("127.0.0.1:{port}"),
        _tansu: Some(guard),
    }
}

// ---------------------------------------------------------------------------------------------
// Plain rdkafka helpers (the independent side of every check)

/// Runs a future to completion on this thread (the admin client's futures need no runtime).
pub fn block_on<F: Future>(f: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Arc::new(Unpark(std::thread::current())).into();
    let mut cx = Context::from_waker(&waker);
    let mut f = pin!(f);
    loop {
        match f.as_mut().poll(&mut cx) {
            Poll::Ready(v) => return v,
            Poll::Pending => std::thread::park_timeout(Duration::from_millis(50)),
        }
    }
}

/// A topic name no other test (or earlier run against the same broker) uses.
pub fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{name}-{}-{}", std::process::id(), nanos % 1_000_000_000)
}

/// Creates `topic` with `partitions` partitions (replication 1) with a plain admin client;
/// panics, naming the topic, if it cannot.
pub fn create_topic(bootstrap: &str, topic: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin client");
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = block_on(admin.create_topics(
        &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
        &opts,
    ))
    .expect("create_topics");
    for r in results {
        if let Err((t, e)) = r {
            panic!("cannot create topic {t}: {e}");
        }
    }
}

/// Deletes `topic` with a plain admin client; panics, naming the topic, if it cannot.
pub fn delete_topic(bootstrap: &str, topic: &str) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin client");
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = block_on(admin.delete_topics(&[topic], &opts)).expect("delete_topics");
    for r in results {
        if let Err((t, e)) = r {
            panic!("cannot delete topic {t}: {e}");
        }
    }
}
