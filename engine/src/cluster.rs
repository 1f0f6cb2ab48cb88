//! Connecting the processes of a cluster, before timely runs on the connections.
//!
//! timely's own connection loop (`create_sockets`) retries once a second, for ever, and prints
//! to stdout; a process whose peer never starts hangs. Here each process listens on its own
//! address, connects to every process before it in the hosts list (retrying within
//! milliseconds, so a cluster whose processes start together connects at once), accepts every
//! process after it, and checks with each that they run one cluster: the same job, the same
//! number of processes and of workers per process (timely numbers workers on the assumption
//! that every process has as many). A cluster that has not connected by the deadline fails
//! with an error that names every process still missing and its address. Connections that do
//! not speak runnel's greeting (a port scan) are logged and dropped; a runnel process of
//! another cluster or job is an error on both sides.
//!
//! The handshake, on each connection: the connecting process sends its [`Greeting`]; the
//! accepting one answers with its own; the connecting one, if they agree, sends one byte
//! ([`CONFIRM`]), and only a confirmed connection counts. The accepting side reads every
//! pending connection without blocking, so a connection that sends nothing holds up no other,
//! and exactly the handshake's bytes: what follows is timely's.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// The first bytes of the greeting: runnel's cluster protocol, version 1.
const MAGIC: [u8; 8] = *b"runnel\x00\x01";

/// The greeting's fixed part: the magic, three u64 and the job name's length (u32).
const FIXED: usize = 8 + 3 * 8 + 4;

/// The longest job name a greeting carries.
const MAX_JOB_NAME: usize = 4096;

/// The byte a connecting process sends once it has checked the accepting one's greeting.
const CONFIRM: u8 = 1;

/// How long an accepted connection may take to send its whole greeting, and its confirmation.
const GREETING_TIMEOUT: Duration = Duration::from_secs(10);

/// How often the waiting is logged.
const LOG_EVERY: Duration = Duration::from_secs(5);

/// How many accepted connections may be waiting for their greeting at once.
const MAX_PENDING: usize = 64;

/// What each process of a cluster tells the others when they connect; all of it must agree,
/// except the index, which must be the one the hosts list gives the address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Greeting {
    /// The number of processes.
    pub processes: u64,
    /// The sender's index.
    pub index: u64,
    /// Worker threads per process.
    pub workers: u64,
    /// The job's name.
    pub job: String,
}

/// What the bytes of a greeting read so far come to.
#[derive(Debug, PartialEq, Eq)]
enum Parsed {
    /// A greeting needs this many bytes in all, more than there are.
    Needs(usize),
    /// Not a runnel greeting of this version.
    Stranger(String),
    /// A whole greeting.
    Done(Greeting),
}

impl Greeting {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(FIXED + self.job.len());
        out.extend_from_slice(&MAGIC);
        for n in [self.processes, self.index, self.workers] {
            out.extend_from_slice(&n.to_le_bytes());
        }
        out.extend_from_slice(&(self.job.len() as u32).to_le_bytes());
        out.extend_from_slice(self.job.as_bytes());
        out
    }

    /// Parses the first bytes of a connection: never more than a greeting's, so that a reader
    /// that reads only up to what [`Parsed::Needs`] says takes nothing of what follows.
    fn parse(buf: &[u8]) -> Parsed {
        let magic = buf.len().min(MAGIC.len());
        if buf[..magic] != MAGIC[..magic] {
            return Parsed::Stranger("its first bytes are not runnel's greeting".into());
        }
        if buf.len() < FIXED {
            return Parsed::Needs(FIXED);
        }
        let n = |i: usize| u64::from_le_bytes(buf[8 + i * 8..16 + i * 8].try_into().unwrap());
        let len = u32::from_le_bytes(buf[32..36].try_into().unwrap()) as usize;
        if len > MAX_JOB_NAME {
            return Parsed::Stranger(format!("a job name of {len} bytes"));
        }
        if buf.len() < FIXED + len {
            return Parsed::Needs(FIXED + len);
        }
        match std::str::from_utf8(&buf[FIXED..FIXED + len]) {
            Ok(job) => Parsed::Done(Greeting {
                processes: n(0),
                index: n(1),
                workers: n(2),
                job: job.to_string(),
            }),
            Err(_) => Parsed::Stranger("a job name that is not UTF-8".into()),
        }
    }

    /// Where `theirs`, from the process the hosts list puts at `expected_index`, differs from
    /// this one's, in words; `None` when they make one cluster.
    fn mismatch(&self, theirs: &Greeting, expected_index: usize) -> Option<String> {
        let mut diffs = Vec::new();
        if theirs.job != self.job {
            diffs.push(format!(
                "it runs job '{}', this process runs '{}'",
                theirs.job, self.job
            ));
        }
        if theirs.processes != self.processes {
            diffs.push(format!(
                "it has --processes {}, this process {}",
                theirs.processes, self.processes
            ));
        }
        if theirs.workers != self.workers {
            diffs.push(format!(
                "it has --workers {}, this process {} (every process of a cluster needs as many)",
                theirs.workers, self.workers
            ));
        }
        if theirs.index != expected_index as u64 {
            diffs.push(format!(
                "it has --process-id {}, where the hosts list puts process {expected_index}",
                theirs.index
            ));
        }
        (!diffs.is_empty()).then(|| diffs.join("; "))
    }
}

/// How one side of [`connect`] ends when it does not connect.
enum Failed {
    /// An error that ends the run at once (another cluster's process, a process started
    /// twice, a listener that fails).
    Fatal(Error),
    /// The deadline passed: the processes still missing, each with its address and what was
    /// last seen of it.
    Missing(Vec<String>),
    /// Stopped: the other side failed, or the run was stopped.
    Stopped,
}

/// What one side of [`connect`] comes to.
type Side = std::result::Result<Vec<TcpStream>, Failed>;

/// Whether each side of [`connect`] has all its connections. Neither ends before both have
/// (or the deadline passes): until then each watches its own, and one that closes (its process
/// killed and started again) is made again. A connection that closes after its side has ended
/// (a window of a millisecond between the two sides' ends, or any time after `connect`
/// returns) fails the run in timely, with the lost connection.
#[derive(Default)]
struct Done {
    connected: AtomicBool,
    accepted: AtomicBool,
}

/// Connects this process (`me.index`) to every other process of the cluster at `addresses`
/// (one per process, in process order), within `timeout` of the call. Returns one socket per
/// process, in process order, `None` at this process's own place: what timely's
/// `initialize_networking_from_sockets` takes. `stop` set (Ctrl-C) ends the wait with an
/// error.
pub(crate) fn connect(
    addresses: &[String],
    me: &Greeting,
    timeout: Duration,
    stop: &Arc<AtomicBool>,
) -> Result<Vec<Option<TcpStream>>> {
    let index = me.index as usize;
    let started = Instant::now();
    let deadline = started
        .checked_add(timeout)
        .unwrap_or(started + Duration::from_secs(365 * 24 * 3600));
    let fail = |what: String| Error::Runtime(format!("the cluster cannot connect: {what}"));
    let listener = TcpListener::bind(addresses[index].as_str()).map_err(|e| {
        fail(format!(
            "this process ({index}) cannot listen on {}, its address in the hosts list: {e}",
            addresses[index]
        ))
    })?;
    listener
        .set_nonblocking(true)
        .map_err(|e| fail(format!("cannot set up the listener: {e}")))?;

    // Accepting in a thread of its own while this one connects: a process accepts from the
    // processes after it and connects to those before it, so no process waits on another
    // that waits on it. A side that fails for good stops the other.
    let failed = Arc::new(AtomicBool::new(false));
    let done = Arc::new(Done::default());
    let accepting = {
        let me = me.clone();
        let addresses = addresses.to_vec();
        let (failed, stop, done) = (failed.clone(), stop.clone(), done.clone());
        std::thread::Builder::new()
            .name("runnel-accept".into())
            .spawn(move || {
                let r = accept_all(
                    &listener,
                    &addresses,
                    &me,
                    deadline,
                    &[&failed, &stop],
                    &done,
                );
                if let Err(Failed::Fatal(_)) = r {
                    failed.store(true, Ordering::SeqCst);
                }
                r
            })
            .map_err(|e| fail(format!("cannot start a thread: {e}")))?
    };
    let connected = connect_all(addresses, me, deadline, &[&failed, stop], &done);
    if let Err(Failed::Fatal(_)) = connected {
        failed.store(true, Ordering::SeqCst);
    }
    let accepted = accepting.join().unwrap_or_else(|_| {
        Err(Failed::Fatal(fail(
            "the thread accepting connections panicked".into(),
        )))
    });
    let (connected, accepted) = match (connected, accepted) {
        (Ok(c), Ok(a)) => (c, a),
        (Err(Failed::Fatal(e)), _) | (_, Err(Failed::Fatal(e))) => return Err(e),
        _ if stop.load(Ordering::SeqCst) => {
            return Err(Error::Runtime(
                "stopped before the cluster had connected".into(),
            ));
        }
        (c, a) => {
            let mut missing = Vec::new();
            for side in [c, a] {
                if let Err(Failed::Missing(m)) = side {
                    missing.extend(m);
                }
            }
            return Err(Error::Runtime(format!(
                "the cluster did not connect within {timeout:?} (--connect-timeout): process \
                 {index}, listening on {}, is missing {}; are they running, with this hosts \
                 list?",
                addresses[index],
                missing.join("; ")
            )));
        }
    };
    let mut sockets: Vec<Option<TcpStream>> = Vec::with_capacity(addresses.len());
    sockets.extend(connected.into_iter().map(Some));
    sockets.push(None);
    sockets.extend(accepted.into_iter().map(Some));
    for s in sockets.iter().flatten() {
        s.set_nonblocking(false)
            .and_then(|()| s.set_read_timeout(None))
            .and_then(|()| s.set_nodelay(true))
            .map_err(|e| fail(format!("cannot set up a connection: {e}")))?;
    }
    tracing::debug!(
        "process {index} connected to the {} others in {:?}",
        addresses.len() - 1,
        started.elapsed()
    );
    Ok(sockets)
}

/// Whether any of the flags is set.
fn any(flags: &[&AtomicBool]) -> bool {
    flags.iter().any(|f| f.load(Ordering::SeqCst))
}

/// The processes before `me` in the hosts list, each tried in turn and retried until it
/// answers or the deadline passes.
fn connect_all(
    addresses: &[String],
    me: &Greeting,
    deadline: Instant,
    stop: &[&AtomicBool],
    done: &Done,
) -> Side {
    let index = me.index as usize;
    let hello = me.encode();
    let mut got: Vec<Option<TcpStream>> = (0..index).map(|_| None).collect();
    let mut last: Vec<String> = vec!["not tried".into(); index];
    // Which of them connected and then closed their connection (for the error at the end).
    let mut closed = vec![false; index];
    let mut pause = Duration::from_millis(2);
    let mut logged = Instant::now();
    loop {
        for peer in 0..index {
            if got[peer].as_ref().is_some_and(|s| !alive(s)) {
                // It went away before the whole cluster had connected (killed, or gave up):
                // connected to again when it is back.
                tracing::warn!(
                    "process {index}: process {peer} closed its connection before the cluster \
                     had connected; connecting to it again"
                );
                got[peer] = None;
                closed[peer] = true;
            }
            if got[peer].is_some() {
                continue;
            }
            let address = &addresses[peer];
            match greet(address, &hello, deadline) {
                Ok((stream, theirs)) => match me.mismatch(&theirs, peer) {
                    None => {
                        // Confirmed: from here on the connection is timely's (if the other
                        // side reads the byte before its own deadline or failure; if not, the
                        // cluster fails in timely, with the lost connection).
                        let confirmed = (&stream)
                            .write_all(&[CONFIRM])
                            .and_then(|()| stream.set_nonblocking(true));
                        if let Err(e) = confirmed {
                            last[peer] = format!("the connection broke: {e}");
                            continue;
                        }
                        tracing::debug!("process {index} connected to process {peer} at {address}");
                        got[peer] = Some(stream);
                    }
                    Some(why) => {
                        return Err(Failed::Fatal(Error::Runtime(format!(
                            "the cluster cannot connect: process {peer} at {address} is not of \
                             this process's cluster: {why}"
                        ))))
                    }
                },
                Err(e) => last[peer] = e,
            }
        }
        let complete = got.iter().all(Option::is_some);
        done.connected.store(complete, Ordering::SeqCst);
        if complete && done.accepted.load(Ordering::SeqCst) {
            break;
        }
        if any(stop) {
            return Err(Failed::Stopped);
        }
        let now = Instant::now();
        let missing = || {
            (0..index)
                .filter(|&p| got[p].is_none())
                .map(|p| {
                    let then = if closed[p] {
                        "it connected, then closed the connection; since then: "
                    } else {
                        ""
                    };
                    format!("process {p} at {} ({then}{})", addresses[p], last[p])
                })
                .collect::<Vec<_>>()
        };
        if now >= deadline {
            if complete {
                break;
            }
            return Err(Failed::Missing(missing()));
        }
        if complete {
            // Waiting for the accepting side, watching these connections meanwhile.
            std::thread::sleep(Duration::from_millis(1).min(deadline - now));
            continue;
        }
        if now.duration_since(logged) >= LOG_EVERY {
            logged = now;
            tracing::warn!(
                "process {index} is waiting to connect to {}",
                missing().join("; ")
            );
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(200));
    }
    Ok(got.into_iter().map(Option::unwrap).collect())
}

/// One attempt at a connection to `address` (resolved anew each time: a host may appear in
/// the name service only once it starts): opened, greeted, and answered by a greeting.
fn greet(
    address: &str,
    hello: &[u8],
    deadline: Instant,
) -> std::result::Result<(TcpStream, Greeting), String> {
    let addrs: Vec<SocketAddr> = address
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve it: {e}"))?
        .collect();
    let mut last = format!("{address} resolves to no address");
    for a in addrs {
        let left = |cap: Duration| {
            deadline
                .saturating_duration_since(Instant::now())
                .clamp(Duration::from_millis(1), cap)
        };
        let mut stream = match TcpStream::connect_timeout(&a, left(Duration::from_secs(1))) {
            Ok(s) => s,
            Err(e) => {
                last = e.to_string();
                continue;
            }
        };
        // Connecting to a free local port can connect a socket to itself.
        if stream.local_addr().ok() == stream.peer_addr().ok() {
            last = "connected to itself (the port was free)".into();
            continue;
        }
        let read = stream
            .set_read_timeout(Some(left(GREETING_TIMEOUT)))
            .and_then(|()| stream.write_all(hello));
        if let Err(e) = read {
            last = format!("the connection broke: {e}");
            continue;
        }
        let mut buf = Vec::with_capacity(FIXED);
        loop {
            match Greeting::parse(&buf) {
                Parsed::Done(g) => return Ok((stream, g)),
                Parsed::Stranger(why) => {
                    return Err(format!("it answered, but not as a runnel process: {why}"))
                }
                Parsed::Needs(n) => {
                    let have = buf.len();
                    buf.resize(n, 0);
                    match stream.read(&mut buf[have..]) {
                        Ok(0) => {
                            last = "it closed the connection before answering".into();
                            break;
                        }
                        Ok(k) => buf.truncate(have + k),
                        Err(e) if e.kind() == ErrorKind::Interrupted => buf.truncate(have),
                        Err(e) => {
                            last = format!("no answer: {e}");
                            break;
                        }
                    }
                }
            }
        }
    }
    Err(last)
}

/// A connection accepted, its handshake not done.
struct Pending {
    stream: TcpStream,
    from: SocketAddr,
    since: Instant,
    /// The greeting's bytes so far.
    buf: Vec<u8>,
    /// Once its greeting is read and answered: the process it is.
    peer: Option<usize>,
}

/// What became of a pending connection after a read.
enum Step {
    /// Nothing more to read yet.
    Wait,
    /// Its greeting is in: check it and answer.
    Greeted(Greeting),
    /// Confirmed: it is the process's.
    Confirmed,
    /// Dropped, with why.
    Drop(String),
}

impl Pending {
    /// Reads what has come, never past the handshake.
    fn step(&mut self) -> Step {
        loop {
            let want = match self.peer {
                Some(_) => 1,
                None => match Greeting::parse(&self.buf) {
                    Parsed::Done(g) => return Step::Greeted(g),
                    Parsed::Stranger(why) => return Step::Drop(why),
                    Parsed::Needs(n) => n,
                },
            };
            let mut one = [0u8; 1];
            let have = self.buf.len();
            let read = if self.peer.is_some() {
                self.stream.read(&mut one)
            } else {
                self.buf.resize(want, 0);
                let r = self.stream.read(&mut self.buf[have..]);
                self.buf.truncate(have + *r.as_ref().unwrap_or(&0));
                r
            };
            match read {
                Ok(0) => return Step::Drop("it closed the connection".into()),
                Ok(_) if self.peer.is_some() => {
                    return if one[0] == CONFIRM {
                        Step::Confirmed
                    } else {
                        Step::Drop("it did not confirm".into())
                    };
                }
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Step::Wait,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Step::Drop(e.to_string()),
            }
        }
    }
}

/// Whether a confirmed connection, not yet read by timely (non-blocking until the cluster has
/// connected), is still open: the process at its other end may already send timely's bytes,
/// which are left where they are.
fn alive(stream: &TcpStream) -> bool {
    match stream.peek(&mut [0u8; 1]) {
        Ok(0) => false,
        Ok(_) => true,
        Err(e) => matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted),
    }
}

/// The processes after `me` in the hosts list, accepted in any order, until each has
/// connected or the deadline passes.
fn accept_all(
    listener: &TcpListener,
    addresses: &[String],
    me: &Greeting,
    deadline: Instant,
    stop: &[&AtomicBool],
    done: &Done,
) -> Side {
    let index = me.index as usize;
    let hello = me.encode();
    let mut got: Vec<Option<TcpStream>> = (index + 1..addresses.len()).map(|_| None).collect();
    let mut pending: Vec<Pending> = Vec::new();
    // What was last seen of each process after this one, for the error at the deadline.
    let mut last: Vec<&str> = vec!["it never connected"; got.len()];
    let mut logged = Instant::now();
    let mut accept_error_logged: Option<Instant> = None;
    loop {
        for (i, slot) in got.iter_mut().enumerate() {
            if slot.as_ref().is_some_and(|s| !alive(s)) {
                tracing::warn!(
                    "process {index}: process {} closed its connection before the cluster had \
                     connected; waiting for it again",
                    index + 1 + i
                );
                *slot = None;
                last[i] = "it connected, then closed the connection";
            }
        }
        let complete = got.iter().all(Option::is_some);
        done.accepted.store(complete, Ordering::SeqCst);
        if complete && done.connected.load(Ordering::SeqCst) {
            break;
        }
        let now = Instant::now();
        if now >= deadline {
            if complete {
                break;
            }
            let missing = (index + 1..addresses.len())
                .filter(|p| got[p - index - 1].is_none())
                .map(|p| format!("process {p} at {} ({})", addresses[p], last[p - index - 1]))
                .collect();
            return Err(Failed::Missing(missing));
        }
        if any(stop) {
            return Err(Failed::Stopped);
        }
        let mut busy = false;
        match listener.accept() {
            Ok((stream, from)) => {
                busy = true;
                if pending.len() >= MAX_PENDING {
                    // A flood of connections that say nothing: the oldest goes.
                    let oldest = (0..pending.len())
                        .min_by_key(|&i| pending[i].since)
                        .expect("pending is full");
                    let p = pending.swap_remove(oldest);
                    tracing::warn!(
                        "process {index}: too many connections that have not greeted; the one \
                         from {} dropped",
                        p.from
                    );
                }
                match stream.set_nonblocking(true) {
                    Ok(()) => pending.push(Pending {
                        stream,
                        from,
                        since: now,
                        buf: Vec::new(),
                        peer: None,
                    }),
                    Err(e) => tracing::warn!("process {index}: a connection from {from}: {e}"),
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => {
                // A connection reset before it was accepted, or out of file descriptors for a
                // moment: the listener itself still works. Logged every few seconds at most.
                if accept_error_logged.is_none_or(|t| now.duration_since(t) >= LOG_EVERY) {
                    accept_error_logged = Some(now);
                    tracing::warn!(
                        "process {index}: accepting a connection on {} failed: {e}",
                        addresses[index]
                    );
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let mut i = 0;
        while i < pending.len() {
            let p = &mut pending[i];
            let step = match p.step() {
                Step::Wait if now.duration_since(p.since) >= GREETING_TIMEOUT => {
                    Step::Drop(format!("nothing for {GREETING_TIMEOUT:?}"))
                }
                s => s,
            };
            match step {
                Step::Wait => i += 1,
                Step::Drop(why) => {
                    let p = pending.swap_remove(i);
                    tracing::warn!(
                        "process {index}: a connection from {} that is not a runnel process of \
                         this cluster, dropped: {why}",
                        p.from
                    );
                }
                Step::Greeted(theirs) => {
                    busy = true;
                    let peer = theirs.index as usize;
                    // Whatever it says, it hears this process's own greeting, so that it can
                    // say what differs too.
                    let _ = (&p.stream).write_all(&hello);
                    if peer <= index || peer >= addresses.len() {
                        return Err(Failed::Fatal(Error::Runtime(format!(
                            "the cluster cannot connect: a process at {} says it is process \
                             {peer} (of --processes {}), which does not connect to process \
                             {index} of {} processes: are the hosts files the same?",
                            p.from,
                            theirs.processes,
                            addresses.len()
                        ))));
                    }
                    if let Some(why) = me.mismatch(&theirs, peer) {
                        return Err(Failed::Fatal(Error::Runtime(format!(
                            "the cluster cannot connect: a process at {} is not of this \
                             process's cluster: {why}",
                            p.from
                        ))));
                    }
                    p.peer = Some(peer);
                }
                Step::Confirmed => {
                    busy = true;
                    let p = pending.swap_remove(i);
                    let peer = p.peer.expect("confirmed after its greeting");
                    let slot = &mut got[peer - index - 1];
                    if slot.as_ref().is_some_and(|earlier| !alive(earlier)) {
                        // The earlier one has gone (a process killed and started again before
                        // the cluster connected): this one takes its place.
                        tracing::warn!(
                            "process {index}: process {peer} connected again from {}, the \
                             earlier connection is closed",
                            p.from
                        );
                        *slot = None;
                    }
                    if slot.is_some() {
                        return Err(Failed::Fatal(Error::Runtime(format!(
                            "the cluster cannot connect: two processes say they are process \
                             {peer} (the second from {}): is one started twice?",
                            p.from
                        ))));
                    }
                    tracing::debug!("process {index} accepted process {peer} from {}", p.from);
                    *slot = Some(p.stream);
                }
            }
        }
        if now.duration_since(logged) >= LOG_EVERY {
            logged = now;
            let missing: Vec<String> = (index + 1..addresses.len())
                .filter(|p| got[p - index - 1].is_none())
                .map(|p| format!("process {p} ({})", addresses[p]))
                .collect();
            if !missing.is_empty() {
                tracing::warn!(
                    "process {index} is waiting for {} to connect",
                    missing.join(", ")
                );
            }
        }
        if !busy {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    Ok(got.into_iter().map(Option::unwrap).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Free local addresses, one per process (bound and let go: nothing else takes them in
    /// the moment between, on a test machine).
    fn addresses(n: usize) -> Vec<String> {
        let listeners: Vec<TcpListener> = (0..n)
            .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        listeners
            .iter()
            .map(|l| l.local_addr().unwrap().to_string())
            .collect()
    }

    /// Each process writes its index on every socket it has; each socket must then read the
    /// index of the process at its place (and a process has no socket at its own place).
    fn each_socket_reaches_its_process(all: &mut [Vec<Option<TcpStream>>]) {
        let n = all.len();
        for (i, sockets) in all.iter_mut().enumerate() {
            assert_eq!(sockets.len(), n, "process {i}'s sockets");
            for (j, s) in sockets.iter_mut().enumerate() {
                assert_eq!(s.is_none(), i == j, "process {i}'s socket {j}");
                if let Some(s) = s {
                    // Not a byte of the handshake's (the confirmation is 1).
                    s.write_all(&[b'A' + i as u8]).unwrap();
                    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                }
            }
        }
        for (i, sockets) in all.iter_mut().enumerate() {
            for (j, s) in sockets.iter_mut().enumerate() {
                if let Some(s) = s {
                    let mut got = [0u8; 1];
                    s.read_exact(&mut got).unwrap();
                    assert_eq!(got[0], b'A' + j as u8, "process {i}'s socket {j}");
                }
            }
        }
    }

    /// Process `index` of a cluster of one worker each at `addresses`, connecting on a thread
    /// of its own with `timeout_secs`.
    fn spawn_process(
        addresses: &[String],
        index: usize,
        timeout_secs: u64,
    ) -> std::thread::JoinHandle<Result<Vec<Option<TcpStream>>>> {
        let addresses = addresses.to_vec();
        let me = greeting(addresses.len(), index, 1, "j");
        std::thread::spawn(move || {
            connect(
                &addresses,
                &me,
                Duration::from_secs(timeout_secs),
                &no_stop(),
            )
        })
    }

    fn no_stop() -> Arc<AtomicBool> {
        Arc::new(AtomicBool::new(false))
    }

    fn greeting(processes: usize, index: usize, workers: u64, job: &str) -> Greeting {
        Greeting {
            processes: processes as u64,
            index: index as u64,
            workers,
            job: job.into(),
        }
    }

    /// Runs `connect` for each greeting on a thread of its own, process `i` started after
    /// `delays[i]`.
    fn run(
        addresses: &[String],
        greetings: Vec<Greeting>,
        delays: &[u64],
        timeout: Duration,
    ) -> Vec<Result<Vec<Option<TcpStream>>>> {
        let handles: Vec<_> = greetings
            .into_iter()
            .zip(delays)
            .map(|(g, &delay)| {
                let addresses = addresses.to_vec();
                std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_millis(delay));
                    connect(&addresses, &g, timeout, &no_stop())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    }

    /// Three processes, started in every order the delays give, come out with a socket to each
    /// other at the right places: what one writes on its socket to another, that one reads on
    /// its socket from the first.
    #[test]
    fn three_processes_connect_in_any_start_order_and_each_socket_reaches_its_process() {
        for delays in [[0, 0, 0], [300, 0, 150], [0, 150, 300]] {
            let addrs = addresses(3);
            let greetings = (0..3).map(|i| greeting(3, i, 2, "job")).collect();
            let mut all: Vec<Vec<Option<TcpStream>>> =
                run(&addrs, greetings, &delays, Duration::from_secs(20))
                    .into_iter()
                    .map(|r| r.unwrap())
                    .collect();
            for sockets in &all {
                assert_eq!(sockets.len(), 3, "delays {delays:?}");
            }
            each_socket_reaches_its_process(&mut all);
        }
    }

    /// A cluster whose second process has one worker less: both processes fail, and each error
    /// says what differs.
    #[test]
    fn processes_with_different_worker_counts_both_fail_naming_the_counts() {
        let addrs = addresses(2);
        let results = run(
            &addrs,
            vec![greeting(2, 0, 2, "q5"), greeting(2, 1, 1, "q5")],
            &[0, 0],
            Duration::from_secs(20),
        );
        let want = ["--workers 1, this process 2", "--workers 2, this process 1"];
        for (r, want) in results.into_iter().zip(want) {
            let e = r.unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
            assert!(
                e.contains("every process of a cluster needs as many"),
                "{e}"
            );
        }
    }

    /// Two processes of different jobs at each other's addresses: both fail and name the jobs.
    #[test]
    fn processes_of_different_jobs_fail_naming_both() {
        let addrs = addresses(2);
        let results = run(
            &addrs,
            vec![
                greeting(2, 0, 1, "nexmark-q4"),
                greeting(2, 1, 1, "nexmark-q5"),
            ],
            &[0, 0],
            Duration::from_secs(20),
        );
        for r in results {
            let e = r.unwrap_err().to_string();
            assert!(e.contains("nexmark-q4") && e.contains("nexmark-q5"), "{e}");
        }
    }

    /// A process whose peers never start fails at the deadline, naming every one of them and
    /// its address, on either side of it in the hosts list.
    #[test]
    fn a_process_whose_peers_never_start_fails_at_the_deadline_naming_each() {
        let addrs = addresses(4);
        let started = Instant::now();
        let e = connect(
            &addrs,
            &greeting(4, 2, 1, "j"),
            Duration::from_millis(300),
            &no_stop(),
        )
        .unwrap_err()
        .to_string();
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert!(e.contains("did not connect within 300ms"), "{e}");
        for p in [0, 1, 3] {
            assert!(
                e.contains(&format!("process {p} at {}", addrs[p])),
                "process {p}: {e}"
            );
        }
        assert!(!e.contains("process 2 at"), "{e}");
    }

    /// Connections that are not runnel's (one that closes at once, one that sends other bytes,
    /// one that sends nothing and stays open) are dropped or left waiting; none holds up the
    /// peer, which connects as soon as it comes.
    #[test]
    fn strangers_at_the_port_are_dropped_and_hold_up_no_peer() {
        let addrs = addresses(2);
        let p0 = spawn_process(&addrs, 0, 30);
        // The strangers find the listener once process 0 has bound it.
        let mut stranger = loop {
            match TcpStream::connect(addrs[0].as_str()) {
                Ok(s) => break s,
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        };
        let _silent = TcpStream::connect(addrs[0].as_str()).unwrap();
        drop(TcpStream::connect(addrs[0].as_str()).unwrap());
        // As many bytes as the magic, none of them it (more, left unread, would make the
        // close a reset).
        stranger.write_all(b"GET / HT").unwrap();
        stranger
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut nothing = Vec::new();
        // Dropped without a word (runnel's greeting is not sent to what did not greet).
        stranger.read_to_end(&mut nothing).unwrap();
        assert!(nothing.is_empty());
        let started = Instant::now();
        let p1 = spawn_process(&addrs, 1, 30).join().unwrap().unwrap();
        let p0 = p0.join().unwrap().unwrap();
        // Well within the 10 s a silent connection is given: the silent one held up nothing.
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        assert!(p0[0].is_none() && p0[1].is_some());
        assert!(p1[0].is_some() && p1[1].is_none());
    }

    /// Two processes that both say they are process 1, both running: the one that confirms
    /// second is refused, and the error says the process was started twice.
    #[test]
    fn a_process_started_twice_is_named() {
        // Process 2 never starts: process 0 waits for it, and so does each process 1.
        let three = addresses(3);
        let p0 = spawn_process(&three, 0, 30);
        let stop = no_stop();
        let (a1, s1) = (three.clone(), stop.clone());
        let first = std::thread::spawn(move || {
            connect(&a1, &greeting(3, 1, 1, "j"), Duration::from_secs(30), &s1)
        });
        // The second process 1 listens elsewhere, as one started on another machine would;
        // it comes once the first has connected (process 0 is then waiting for process 2).
        std::thread::sleep(Duration::from_millis(500));
        let mut again = three.clone();
        again[1] = addresses(1).remove(0);
        let _ = connect(
            &again,
            &greeting(3, 1, 1, "j"),
            Duration::from_secs(2),
            &no_stop(),
        );
        let e = p0.join().unwrap().unwrap_err().to_string();
        assert!(e.contains("two processes say they are process 1"), "{e}");
        stop.store(true, Ordering::SeqCst);
        assert!(first.join().unwrap().is_err());
    }

    /// A process that connected and then went away (killed before the cluster had connected)
    /// is replaced by the one started again in its place, and the cluster connects.
    #[test]
    fn a_process_started_again_before_the_cluster_connected_takes_its_place() {
        let three = addresses(3);
        let p0 = spawn_process(&three, 0, 30);
        // The first process 1 connects to process 0, waits for process 2 in vain and ends.
        let first = spawn_process(&three, 1, 2)
            .join()
            .unwrap()
            .unwrap_err()
            .to_string();
        // It had connected to process 0: only process 2 is missing.
        assert!(
            first.contains("process 2 at") && !first.contains("process 0 at"),
            "{first}"
        );
        // Started again (at another address: the old one's port may linger), with process 2.
        let mut again = three.clone();
        again[1] = addresses(1).remove(0);
        let (p1, p2) = (spawn_process(&again, 1, 30), spawn_process(&again, 2, 30));
        let mut all = [p0, p1, p2].map(|h| h.join().unwrap().unwrap());
        each_socket_reaches_its_process(&mut all);
    }

    /// Process 0, which the others connect to, gone before the cluster had connected and
    /// started again at its address: the process that had connected to it connects again.
    #[test]
    fn a_process_connected_to_and_started_again_is_connected_to_again() {
        let three = addresses(3);
        // The first process 0 gets process 1, waits for process 2 in vain and ends.
        let first = spawn_process(&three, 0, 2);
        let p1 = spawn_process(&three, 1, 30);
        let first = first.join().unwrap().unwrap_err().to_string();
        assert!(
            first.contains("process 2 at") && !first.contains("process 1 at"),
            "{first}"
        );
        let (p0, p2) = (spawn_process(&three, 0, 30), spawn_process(&three, 2, 30));
        let mut all = [p0, p1, p2].map(|h| h.join().unwrap().unwrap());
        each_socket_reaches_its_process(&mut all);
    }

    /// The run's stop (Ctrl-C) ends the wait at once with an error that says so.
    #[test]
    fn a_stop_ends_the_wait() {
        let addrs = addresses(2);
        let stop = no_stop();
        let s = stop.clone();
        let waiting = std::thread::spawn(move || {
            connect(&addrs, &greeting(2, 1, 1, "j"), Duration::from_secs(60), &s)
        });
        std::thread::sleep(Duration::from_millis(100));
        stop.store(true, Ordering::SeqCst);
        let e = waiting.join().unwrap().unwrap_err().to_string();
        assert!(
            e.contains("stopped before the cluster had connected"),
            "{e}"
        );
    }

    /// A greeting is parsed from its bytes as written, and from no fewer: every shorter prefix
    /// asks for more, and the count it asks for is never past the greeting's end.
    #[test]
    fn a_greeting_parses_back_from_exactly_its_bytes() {
        let g = greeting(7, 3, 4, "nexmark-q19 ünï");
        let bytes = g.encode();
        for cut in 0..bytes.len() {
            match Greeting::parse(&bytes[..cut]) {
                Parsed::Needs(n) => assert!(n > cut && n <= bytes.len(), "cut {cut}: {n}"),
                other => panic!("cut {cut}: {other:?}"),
            }
        }
        assert_eq!(Greeting::parse(&bytes), Parsed::Done(g));
        assert!(matches!(Greeting::parse(b"GET / HT"), Parsed::Stranger(_)));
        assert!(matches!(Greeting::parse(b"r"), Parsed::Needs(_)));
    }
}
