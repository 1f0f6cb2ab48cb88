//! The checkpoint store and the durable log, against an independent reference: part contents are a
//! deterministic function of (checkpoint id, part name), log records of their index, so a reader
//! can recompute what must be there. The kill tests SIGKILL a child process (this test binary,
//! re-run filtered to a helper test) in the middle of its writes, many times, and check after each
//! kill that the store still gives back the newest complete checkpoint byte for byte.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use runnel_engine::checkpoint::{
    CheckpointEntry, CheckpointInfo, CheckpointStatus, CheckpointStore, DurableLog, LocalDirStore,
    PartInfo, MANIFEST_FILE,
};
use runnel_engine::Error;

// ---------------------------------------------------------------------------------------------
// Helpers

/// A scratch folder under cargo's target tmp dir, removed when the test passes.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join("checkpoint_store")
            .join(format!("{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
}

/// splitmix64: a tiny generator for reference contents.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn seed_of(id: u64, name: &str) -> u64 {
    // FNV-1a over the id and the name.
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for b in id.to_le_bytes().iter().chain(name.as_bytes()) {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn bytes_of(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        out.extend_from_slice(&splitmix(&mut state).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The reference content of part `name` of checkpoint `id`, `len` bytes long.
fn content(id: u64, name: &str, len: usize) -> Vec<u8> {
    bytes_of(seed_of(id, name), len)
}

/// CRC-32 (IEEE), bit by bit: a second implementation to check the manifest against.
fn crc32_reference(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in bytes {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn part_info(name: &str, bytes: &[u8]) -> PartInfo {
    PartInfo {
        name: name.to_string(),
        size: bytes.len() as u64,
        crc32: crc32_reference(bytes),
    }
}

fn meta(id: u64) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("job".to_string(), "test-job".to_string()),
        (
            "note".to_string(),
            format!("checkpoint {id}: ünïcode \"quoted\""),
        ),
    ])
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// Writes and commits checkpoint `id` with small parts; returns the parts' reference infos.
fn small_checkpoint(store: &LocalDirStore, id: u64) -> CheckpointInfo {
    let parts = ["source-0", "count-0"];
    for (i, p) in parts.iter().enumerate() {
        store
            .write_part(id, p, &content(id, p, 1000 + i * 17))
            .unwrap();
    }
    store.commit(id, id * 10, &names(&parts), meta(id)).unwrap()
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn ids(list: &[CheckpointInfo]) -> Vec<u64> {
    list.iter().map(|c| c.id).collect()
}

fn checkpoint_dirs(store: &LocalDirStore) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(store.dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("chk-"))
        .collect();
    v.sort();
    v
}

fn dir_name(id: u64) -> String {
    format!("chk-{id:020}")
}

fn flip_byte(path: &Path, at: usize) {
    let mut b = fs::read(path).unwrap();
    b[at] ^= 0x40;
    fs::write(path, b).unwrap();
}

fn checkpoint_error(e: Error) -> (PathBuf, String) {
    match e {
        Error::Checkpoint { path, reason } => (path, reason),
        other => panic!("expected a checkpoint error, got: {other}"),
    }
}

/// Runs `f`, returning what it returns and the messages of the warnings it logged.
fn warnings_of<T>(f: impl FnOnce() -> T) -> (T, Vec<String>) {
    use std::sync::{Arc, Mutex};
    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id, Record};
    use tracing::{Event, Level, Metadata};

    struct Message(String);
    impl Visit for Message {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            if field.name() == "message" {
                self.0 = format!("{value:?}");
            }
        }
    }
    struct Warnings(Arc<Mutex<Vec<String>>>);
    impl tracing::Subscriber for Warnings {
        fn enabled(&self, _: &Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, _: &Attributes<'_>) -> Id {
            Id::from_u64(1)
        }
        fn record(&self, _: &Id, _: &Record<'_>) {}
        fn record_follows_from(&self, _: &Id, _: &Id) {}
        fn event(&self, event: &Event<'_>) {
            if *event.metadata().level() == Level::WARN {
                let mut m = Message(String::new());
                event.record(&mut m);
                self.0.lock().unwrap().push(m.0);
            }
        }
        fn enter(&self, _: &Id) {}
        fn exit(&self, _: &Id) {}
    }
    let seen = Arc::new(Mutex::new(Vec::new()));
    let out = tracing::subscriber::with_default(Warnings(seen.clone()), f);
    let seen = seen.lock().unwrap().clone();
    (out, seen)
}

// ---------------------------------------------------------------------------------------------
// The store

#[test]
fn round_trip_gives_back_exactly_what_was_written() {
    let tmp = Scratch::new("round-trip");
    let store = LocalDirStore::new(&tmp.0, "my-job").unwrap();
    assert_eq!(store.dir(), tmp.0.join("my-job"));
    assert!(store.list().unwrap().is_empty());
    assert_eq!(store.latest().unwrap(), None);
    assert_eq!(store.newest_complete_id().unwrap(), None);
    assert_eq!(store.next_id().unwrap(), 1);

    let parts: Vec<(&str, Vec<u8>)> = vec![
        ("source kafka:0", content(1, "a", 3 << 20)),
        ("window-count.w1", content(1, "b", 12_345)),
        ("empty", Vec::new()),
    ];
    let before = now_ms();
    for (name, bytes) in &parts {
        assert!(!store.has_part(1, name));
        let info = store.write_part(1, name, bytes).unwrap();
        assert_eq!(info, part_info(name, bytes));
        assert!(store.has_part(1, name));
    }
    // Rewriting a part before the commit replaces it.
    store.write_part(1, "empty", b"not yet").unwrap();
    store.write_part(1, "empty", b"").unwrap();
    let part_names: Vec<String> = parts.iter().map(|(n, _)| n.to_string()).collect();
    let committed = store.commit(1, 42, &part_names, meta(1)).unwrap();
    let after = now_ms();

    let expected = CheckpointInfo {
        id: 1,
        epoch: 42,
        created_ms: committed.created_ms,
        parts: parts.iter().map(|(n, b)| part_info(n, b)).collect(),
        meta: meta(1),
    };
    assert_eq!(committed, expected);
    assert!((before..=after).contains(&committed.created_ms));
    assert_eq!(committed.size(), (3 << 20) + 12_345);

    let second = small_checkpoint(&store, 2);
    // A fresh handle (a restart) sees the same.
    for store in [&store, &LocalDirStore::new(&tmp.0, "my-job").unwrap()] {
        assert_eq!(
            store.list().unwrap(),
            vec![expected.clone(), second.clone()]
        );
        assert_eq!(store.latest().unwrap(), Some(second.clone()));
        assert_eq!(store.get(1).unwrap(), expected);
        for (name, bytes) in &parts {
            assert_eq!(&store.read_part(1, name).unwrap(), bytes);
        }
        assert_eq!(store.next_id().unwrap(), 3);
    }
    // On disk as documented.
    let chk = tmp.0.join("my-job").join(dir_name(1));
    assert!(chk.join(MANIFEST_FILE).is_file());
    assert_eq!(
        fs::read(chk.join("part-window-count.w1.bin")).unwrap(),
        parts[1].1
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(chk.join(MANIFEST_FILE)).unwrap()).unwrap();
    assert_eq!(manifest["format"], "runnel-checkpoint/1");
    assert_eq!(manifest["checkpoint"]["epoch"], 42);
    // No temporary file is left behind.
    let leftovers: Vec<_> = fs::read_dir(&chk)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn a_part_written_piece_by_piece_is_the_same_as_one_written_whole() {
    // `write_part_with` streams a part through a buffer and checksums it as it goes: the file,
    // its size and CRC must be what the pieces make together, and the checkpoint reads back.
    let tmp = Scratch::new("streamed");
    let store = LocalDirStore::new(&tmp.0, "my-job").unwrap();
    let whole = content(1, "big", (3 << 20) + 12_345);
    // Pieces of uneven sizes, some larger than the buffer.
    let cuts = [
        0,
        1,
        7,
        4096,
        5000,
        (1 << 20) + 3,
        (2 << 20) + 9,
        whole.len(),
    ];
    let info = store
        .write_part_with(1, "big", &mut |w| {
            for pair in cuts.windows(2) {
                w.write_all(&whole[pair[0]..pair[1]])
                    .map_err(|e| Error::Runtime(e.to_string()))?;
            }
            Ok(())
        })
        .unwrap();
    assert_eq!(info, part_info("big", &whole));
    store.write_part(1, "small", b"x").unwrap();
    store
        .commit(1, 1, &names(&["big", "small"]), meta(1))
        .unwrap();
    assert_eq!(store.read_part(1, "big").unwrap(), whole);
    // A writer that fails leaves no part behind.
    let failed = store.write_part_with(2, "big", &mut |w| {
        w.write_all(&whole[..1000])
            .map_err(|e| Error::Runtime(e.to_string()))?;
        Err(Error::Runtime("the state could not be encoded".into()))
    });
    assert!(failed.is_err());
    assert!(!store.has_part(2, "big"));
}

#[test]
fn misuse_is_refused_with_the_path_in_the_error() {
    let tmp = Scratch::new("misuse");
    assert!(LocalDirStore::new(&tmp.0, "../escape").is_err());
    assert!(LocalDirStore::new(&tmp.0, "").is_err());
    let store = LocalDirStore::new(&tmp.0, "job").unwrap();
    for bad in ["../x", "a/b", "", ".hidden", ".."] {
        let (path, reason) = checkpoint_error(store.write_part(1, bad, b"x").unwrap_err());
        assert!(path.starts_with(store.dir()), "{}", path.display());
        assert!(reason.contains("bad part name"), "{reason}");
        assert!(!store.has_part(1, bad));
    }
    assert!(!tmp.0.join("x").exists());

    // A commit that names a part never written fails and names the part's file.
    store.write_part(1, "a", b"aaa").unwrap();
    let err = store
        .commit(1, 1, &names(&["a", "b"]), BTreeMap::new())
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("part-b.bin") && msg.contains("not written"),
        "{msg}"
    );
    assert_eq!(store.latest().unwrap(), None);
    let err = store
        .commit(1, 1, &names(&["a", "a"]), BTreeMap::new())
        .unwrap_err();
    assert!(err.to_string().contains("twice"), "{err}");

    // Once complete, a checkpoint cannot change.
    store.commit(1, 1, &names(&["a"]), BTreeMap::new()).unwrap();
    let msg = store.write_part(1, "a", b"bbb").unwrap_err().to_string();
    assert!(
        msg.contains("MANIFEST.json") && msg.contains("already complete"),
        "{msg}"
    );
    assert!(store.commit(1, 1, &names(&["a"]), BTreeMap::new()).is_err());
    assert!(store.discard(1).is_err());
    assert_eq!(store.read_part(1, "a").unwrap(), b"aaa");

    // Reading what does not exist.
    let msg = store.read_part(1, "zzz").unwrap_err().to_string();
    assert!(msg.contains("no part 'zzz'"), "{msg}");
    let (path, reason) = checkpoint_error(store.get(9).unwrap_err());
    assert_eq!(path, store.dir().join(dir_name(9)));
    assert!(reason.contains("no such checkpoint"), "{reason}");

    // A checkpoint with no part is allowed (a job without state).
    store.commit(2, 2, &[], BTreeMap::new()).unwrap();
    assert_eq!(store.latest().unwrap().unwrap().parts, vec![]);
}

#[test]
fn an_uncommitted_checkpoint_does_not_count() {
    let tmp = Scratch::new("uncommitted");
    let store = LocalDirStore::new(&tmp.0, "job").unwrap();
    let first = small_checkpoint(&store, 1);
    store
        .write_part(2, "source-0", b"half of a checkpoint")
        .unwrap();

    assert_eq!(store.list().unwrap(), vec![first.clone()]);
    assert_eq!(store.latest().unwrap(), Some(first.clone()));
    assert_eq!(store.newest_complete_id().unwrap(), Some(1));
    let (path, reason) = checkpoint_error(store.get(2).unwrap_err());
    assert_eq!(path, store.dir().join(dir_name(2)));
    assert!(reason.contains("incomplete"), "{reason}");
    assert!(store.read_part(2, "source-0").is_err());
    assert_eq!(store.next_id().unwrap(), 3);
    let scan = store.scan().unwrap();
    assert_eq!(
        scan.iter()
            .map(|e| (e.id, e.status.clone()))
            .collect::<Vec<_>>(),
        vec![
            (1, CheckpointStatus::Complete(first.clone())),
            (2, CheckpointStatus::Incomplete)
        ]
    );
    // A leftover can be discarded, and then its id written anew.
    store.discard(2).unwrap();
    assert!(!store.dir().join(dir_name(2)).exists());
    assert_eq!(store.next_id().unwrap(), 2);
}

#[test]
fn corrupt_checkpoints_are_skipped_for_the_previous_complete_one() {
    let tmp = Scratch::new("corrupt");
    let store = LocalDirStore::new(&tmp.0, "job").unwrap();
    let all: Vec<CheckpointInfo> = (1..=5).map(|id| small_checkpoint(&store, id)).collect();
    let part_file = |id: u64, p: &str| store.dir().join(dir_name(id)).join(format!("part-{p}.bin"));
    let manifest = |id: u64| store.dir().join(dir_name(id)).join(MANIFEST_FILE);

    // A flipped byte in a part of the newest: skipped, with a warning that names the file.
    flip_byte(&part_file(5, "count-0"), 500);
    let (latest, warnings) = warnings_of(|| store.latest().unwrap());
    assert_eq!(latest, Some(all[3].clone()));
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    let file = part_file(5, "count-0").display().to_string();
    assert!(
        warnings[0].contains(&file) && warnings[0].contains("corrupt"),
        "{warnings:?}"
    );
    let (path, reason) = checkpoint_error(store.get(5).unwrap_err());
    assert_eq!(path, part_file(5, "count-0"));
    assert!(
        reason.contains("corrupt") && reason.contains("CRC-32"),
        "{reason}"
    );
    let (path, _) = checkpoint_error(store.read_part(5, "count-0").unwrap_err());
    assert_eq!(path, part_file(5, "count-0"));
    assert_eq!(ids(&store.list().unwrap()), vec![1, 2, 3, 4]);
    // The other part of that checkpoint still reads (each part is checked on its own).
    assert_eq!(
        store.read_part(5, "source-0").unwrap(),
        content(5, "source-0", 1000)
    );

    // A truncated manifest.
    let m = fs::read(manifest(4)).unwrap();
    fs::write(manifest(4), &m[..m.len() / 2]).unwrap();
    assert_eq!(store.latest().unwrap(), Some(all[2].clone()));
    let (path, reason) = checkpoint_error(store.get(4).unwrap_err());
    assert_eq!(path, manifest(4));
    assert!(reason.contains("not a valid manifest"), "{reason}");
    // The cheap poll reads manifests only: it skips 4 but not 5, whose part is damaged.
    assert_eq!(store.newest_complete_id().unwrap(), Some(5));
    fs::write(manifest(5), b"{").unwrap();
    assert_eq!(store.newest_complete_id().unwrap(), Some(3));

    // A manifest that still parses but was changed (epoch 30 -> 90).
    let m = fs::read_to_string(manifest(3)).unwrap();
    assert!(m.contains("\"epoch\": 30"));
    fs::write(manifest(3), m.replace("\"epoch\": 30", "\"epoch\": 90")).unwrap();
    assert_eq!(store.latest().unwrap(), Some(all[1].clone()));
    let (path, reason) = checkpoint_error(store.get(3).unwrap_err());
    assert_eq!(path, manifest(3));
    assert!(reason.contains("damaged"), "{reason}");

    // A truncated part, and a missing part.
    let p = part_file(2, "source-0");
    let b = fs::read(&p).unwrap();
    fs::write(&p, &b[..10]).unwrap();
    let (path, reason) = checkpoint_error(store.get(2).unwrap_err());
    assert_eq!(path, p);
    assert!(reason.contains("10 bytes"), "{reason}");
    fs::remove_file(part_file(1, "count-0")).unwrap();
    let (path, reason) = checkpoint_error(store.get(1).unwrap_err());
    assert_eq!(path, part_file(1, "count-0"));
    assert!(reason.contains("missing"), "{reason}");

    assert_eq!(store.latest().unwrap(), None);
    let (list, warnings) = warnings_of(|| store.list().unwrap());
    assert_eq!(list, vec![]);
    assert_eq!(warnings.len(), 5, "{warnings:?}");
    let invalid: Vec<u64> = store
        .scan()
        .unwrap()
        .into_iter()
        .filter(|e| matches!(e.status, CheckpointStatus::Invalid { .. }))
        .map(|e| e.id)
        .collect();
    assert_eq!(invalid, vec![1, 2, 3, 4, 5]);
    // Nothing valid: retain (of a new handle, which has not checksummed any yet) deletes nothing.
    let store = LocalDirStore::new(&tmp.0, "job").unwrap();
    store.retain(1).unwrap();
    assert_eq!(checkpoint_dirs(&store).len(), 5);
}

#[test]
fn retain_keeps_the_newest_and_deletes_leftovers() {
    let tmp = Scratch::new("retain");
    let store = LocalDirStore::new(&tmp.0, "job").unwrap();
    // 1..=8 complete except: 3 incomplete (a crash), 6 with a missing part; 9 in progress.
    for id in 1..=8 {
        if id == 3 {
            store.write_part(id, "source-0", b"crashed").unwrap();
        } else {
            small_checkpoint(&store, id);
        }
    }
    fs::remove_file(store.dir().join(dir_name(6)).join("part-source-0.bin")).unwrap();
    store.write_part(9, "source-0", b"in progress").unwrap();
    // Foreign entries are left alone.
    fs::write(store.dir().join("notes.txt"), b"mine").unwrap();
    fs::create_dir(store.dir().join("chk-12")).unwrap();

    store.retain(3).unwrap();
    let mut expect: Vec<String> = [5, 7, 8, 9].iter().map(|&i| dir_name(i)).collect();
    expect.push("chk-12".into());
    expect.sort();
    assert_eq!(checkpoint_dirs(&store), expect);
    assert_eq!(ids(&store.list().unwrap()), vec![5, 7, 8]);
    assert!(store.dir().join("notes.txt").exists());
    // Idempotent.
    store.retain(3).unwrap();
    assert_eq!(ids(&store.list().unwrap()), vec![5, 7, 8]);

    // keep = 0 still keeps the newest complete one, and what is newer (in progress).
    store.retain(0).unwrap();
    assert_eq!(ids(&store.list().unwrap()), vec![8]);
    assert!(store.has_part(9, "source-0"));

    // A corrupt newest does not count (found by the next start, which checks checksums): the
    // newest valid one is kept, and the corrupt one too.
    small_checkpoint(&store, 10);
    flip_byte(&store.dir().join(dir_name(10)).join("part-count-0.bin"), 3);
    let store = LocalDirStore::new(&tmp.0, "job").unwrap();
    store.retain(1).unwrap();
    assert_eq!(store.latest().unwrap().map(|c| c.id), Some(8));
    assert!(store.dir().join(dir_name(10)).exists());

    // discard_after: everything after a restored checkpoint goes.
    store.discard_after(Some(8)).unwrap();
    assert_eq!(
        checkpoint_dirs(&store),
        vec![dir_name(8), "chk-12".to_string()]
    );
    assert_eq!(store.next_id().unwrap(), 9);

    // clear: everything, logs too.
    let mut log = DurableLog::open(store.dir(), "epochs").unwrap();
    log.append(b"e1").unwrap();
    store.clear().unwrap();
    assert_eq!(store.latest().unwrap(), None);
    assert!(store.scan().unwrap().is_empty());
    assert!(DurableLog::read_all(store.dir(), "epochs")
        .unwrap()
        .is_empty());
    assert_eq!(store.next_id().unwrap(), 1);
    small_checkpoint(&store, 1);
    assert_eq!(store.latest().unwrap().map(|c| c.id), Some(1));
}

#[test]
fn a_store_is_shared_by_threads_writing_parts_of_one_checkpoint() {
    let tmp = Scratch::new("threads");
    let store: std::sync::Arc<dyn CheckpointStore> =
        std::sync::Arc::new(LocalDirStore::new(&tmp.0, "job").unwrap());
    let workers = 4;
    for id in 1..=3u64 {
        std::thread::scope(|s| {
            for w in 0..workers {
                let store = store.clone();
                s.spawn(move || {
                    let name = format!("w{w}");
                    store
                        .write_part(id, &name, &content(id, &name, 100_000 + w))
                        .unwrap();
                });
            }
        });
        let parts: Vec<String> = (0..workers).map(|w| format!("w{w}")).collect();
        assert!(parts.iter().all(|p| store.has_part(id, p)));
        store.commit(id, id, &parts, BTreeMap::new()).unwrap();
        store.retain(2).unwrap();
    }
    assert_eq!(ids(&store.list().unwrap()), vec![2, 3]);
    for w in 0..workers {
        let name = format!("w{w}");
        assert_eq!(
            store.read_part(3, &name).unwrap(),
            content(3, &name, 100_000 + w)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The log

fn record(i: usize) -> Vec<u8> {
    // Mostly small records, every seventh a large one, so that a kill can tear one.
    let len = if i % 7 == 3 {
        200_000 + (i * 7919) % 800_000
    } else {
        (i * 104_729) % 3000
    };
    bytes_of(seed_of(i as u64, "record"), len)
}

#[test]
fn log_round_trip_torn_tail_and_retain() {
    let tmp = Scratch::new("log");
    let dir = &tmp.0;
    assert!(DurableLog::read_all(dir, "epochs").unwrap().is_empty());
    let expected: Vec<Vec<u8>> = (0..20).map(record).collect();
    {
        let mut log = DurableLog::open(dir, "epochs").unwrap();
        assert!(log.is_empty());
        for r in &expected[..10] {
            log.append(r).unwrap();
        }
    }
    let mut log = DurableLog::open(dir, "epochs").unwrap();
    assert_eq!(log.len(), 10);
    for r in &expected[10..] {
        log.append(r).unwrap();
    }
    assert_eq!(log.path(), dir.join("log").join("epochs.log"));
    assert_eq!(DurableLog::read_all(dir, "epochs").unwrap(), expected);
    drop(log);

    // Tear the last record at every few bytes, as a crash in its write would.
    let path = dir.join("log").join("epochs.log");
    let whole = fs::read(&path).unwrap();
    let last = 8 + expected[19].len();
    for cut in [1, 4, 7, 8, 9, last / 2, last - 1] {
        fs::write(&path, &whole[..whole.len() - cut]).unwrap();
        assert_eq!(
            DurableLog::read_all(dir, "epochs").unwrap(),
            expected[..19],
            "cut {cut}"
        );
    }
    // Garbage after the last record (zeros, as a file system may leave).
    let mut garbage = whole.clone();
    garbage.extend([0u8; 100]);
    fs::write(&path, &garbage).unwrap();
    assert_eq!(DurableLog::read_all(dir, "epochs").unwrap(), expected);

    // Opening truncates the torn tail; appends after it are read back.
    fs::write(&path, &whole[..whole.len() - 5]).unwrap();
    let mut log = DurableLog::open(dir, "epochs").unwrap();
    assert_eq!(log.len(), 19);
    log.append(b"after the crash").unwrap();
    let mut want = expected[..19].to_vec();
    want.push(b"after the crash".to_vec());
    assert_eq!(DurableLog::read_all(dir, "epochs").unwrap(), want);

    // retain rewrites the log with the records kept; appends go on after them.
    let kept = log.retain(|r| r.len() % 2 == 0).unwrap();
    let mut want: Vec<Vec<u8>> = want.into_iter().filter(|r| r.len() % 2 == 0).collect();
    assert_eq!(kept, want.len());
    assert_eq!(log.len(), want.len());
    log.append(b"next").unwrap();
    want.push(b"next".to_vec());
    assert_eq!(DurableLog::read_all(dir, "epochs").unwrap(), want);
    drop(log);
    assert_eq!(DurableLog::open(dir, "epochs").unwrap().len(), want.len());

    // An empty file (created by hand, or a header torn by a crash) is an empty log.
    for start in [&b""[..], &b"RNL"[..]] {
        fs::write(dir.join("log").join("fresh.log"), start).unwrap();
        assert!(DurableLog::read_all(dir, "fresh").unwrap().is_empty());
        let mut log = DurableLog::open(dir, "fresh").unwrap();
        assert!(log.is_empty());
        log.append(b"first").unwrap();
        assert_eq!(
            DurableLog::read_all(dir, "fresh").unwrap(),
            vec![b"first".to_vec()]
        );
    }

    // Bad names and foreign files.
    assert!(DurableLog::open(dir, "../x").is_err());
    fs::write(
        dir.join("log").join("other.log"),
        b"not a runnel log at all",
    )
    .unwrap();
    let msg = DurableLog::read_all(dir, "other").unwrap_err().to_string();
    assert!(
        msg.contains("other.log") && msg.contains("not a runnel log"),
        "{msg}"
    );
}

// ---------------------------------------------------------------------------------------------
// Kill tests

const STORE_CHILD_ENV: &str = "RUNNEL_TEST_CHILD_STORE_WRITER";
const LOG_CHILD_ENV: &str = "RUNNEL_TEST_CHILD_LOG_WRITER";
const KILL_JOB: &str = "killed-job";
const KILL_KEEP: usize = 3;
const KILL_PARTS: [&str; 3] = ["source-0", "window-0", "window-1"];

/// The size of part `k` of checkpoint `id` in the kill test: 1 to 5 MiB, odd sizes.
fn kill_part_len(id: u64, k: usize) -> usize {
    (1 << 20) + ((id as usize * 7919 + k * 104_729) % (4 << 20))
}

/// Checks a checkpoint of the kill test against the reference, reading every part back.
fn check_kill_checkpoint(store: &LocalDirStore, info: &CheckpointInfo) {
    let mut want_parts = Vec::new();
    for (k, name) in KILL_PARTS.iter().enumerate() {
        let want = content(info.id, name, kill_part_len(info.id, k));
        let got = store.read_part(info.id, name).unwrap();
        assert!(got == want, "checkpoint {} part {name} differs", info.id);
        want_parts.push(part_info(name, &want));
    }
    assert_eq!(info.parts, want_parts);
    assert_eq!(info.epoch, info.id * 10);
    assert_eq!(info.meta, meta(info.id));
}

/// Not a test of its own: the child of `killed_writers_leave_the_previous_complete_checkpoint`.
/// Does what an engine does: on start, checks the newest complete checkpoint, then writes and
/// commits checkpoints in a loop until killed.
#[test]
fn child_store_writer() {
    let Ok(dir) = std::env::var(STORE_CHILD_ENV) else {
        return;
    };
    let store = LocalDirStore::new(dir, KILL_JOB).unwrap();
    if let Some(info) = store.latest().unwrap() {
        check_kill_checkpoint(&store, &info);
    }
    store.retain(KILL_KEEP).unwrap();
    let mut id = store.next_id().unwrap();
    loop {
        for (k, name) in KILL_PARTS.iter().enumerate() {
            store
                .write_part(id, name, &content(id, name, kill_part_len(id, k)))
                .unwrap();
        }
        store
            .commit(id, id * 10, &names(&KILL_PARTS), meta(id))
            .unwrap();
        store.retain(KILL_KEEP).unwrap();
        id += 1;
    }
}

/// Not a test of its own: the child of `a_killed_log_writer_leaves_a_prefix`. Appends the
/// reference records after those already there, until killed.
#[test]
fn child_log_writer() {
    let Ok(dir) = std::env::var(LOG_CHILD_ENV) else {
        return;
    };
    let dir = PathBuf::from(dir);
    let mut log = DurableLog::open(&dir, "epochs").unwrap();
    for i in log.len().. {
        log.append(&record(i)).unwrap();
    }
}

fn spawn_child(test: &str, env: &str, dir: &Path) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(env, dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// Runs the child for `delay`, then SIGKILLs it (failing if it stopped by itself).
fn kill_after(mut child: Child, delay: Duration) {
    let until = Instant::now() + delay;
    while Instant::now() < until {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the child stopped by itself ({status}); see its output above");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Kill delays, random-ish: from the clock, printed so that a failure can be replayed with
/// `RUNNEL_TEST_KILL_SEED`.
fn kill_delays(rounds: usize, from_ms: u64, to_ms: u64) -> Vec<Duration> {
    let mut seed = std::env::var("RUNNEL_TEST_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| now_ms() as u64);
    eprintln!("kill delays from seed {seed} (RUNNEL_TEST_KILL_SEED)");
    (0..rounds)
        .map(|_| Duration::from_millis(from_ms + splitmix(&mut seed) % (to_ms - from_ms)))
        .collect()
}

#[test]
fn killed_writers_leave_the_previous_complete_checkpoint() {
    let tmp = Scratch::new("kill-store");
    let job_dir = tmp.0.join(KILL_JOB);
    let mut newest_seen = 0u64;
    let mut committed = std::collections::BTreeSet::new();
    let mut rounds_with_leftovers = 0;
    let mut rounds_inside_a_write = 0;
    let delays = kill_delays(10, 50, 400);
    // Ten kills 50..400 ms into a run; then, if too few checkpoints completed in those (a loaded
    // machine), longer runs until some have.
    let mut round = 0;
    while round < delays.len() || (committed.len() < 3 && round < 30) {
        let delay = delays
            .get(round)
            .copied()
            .unwrap_or(Duration::from_millis(1500));
        let child = spawn_child("child_store_writer", STORE_CHILD_ENV, &tmp.0);
        kill_after(child, delay);

        // What the next start sees.
        let store = LocalDirStore::new(&tmp.0, KILL_JOB).unwrap();
        assert_eq!(store.dir(), job_dir);
        let scan: Vec<CheckpointEntry> = store.scan().unwrap();
        for e in &scan {
            assert!(
                !matches!(e.status, CheckpointStatus::Invalid { .. }),
                "round {round}: an invalid checkpoint after a kill: {e:?}"
            );
        }
        let listed = store.list().unwrap();
        let latest = store.latest().unwrap();
        assert_eq!(latest.as_ref(), listed.last(), "round {round}");
        for info in &listed {
            check_kill_checkpoint(&store, info);
            committed.insert(info.id);
        }
        assert!(
            listed.len() <= KILL_KEEP + 1,
            "round {round}: {:?}",
            ids(&listed)
        );
        let newest = latest.map_or(0, |c| c.id);
        assert!(
            newest >= newest_seen,
            "round {round}: the newest complete checkpoint went back from {newest_seen} to \
             {newest}"
        );
        newest_seen = newest;
        let leftovers = scan
            .iter()
            .filter(|e| e.status == CheckpointStatus::Incomplete && e.id > newest)
            .count();
        if leftovers > 0 {
            rounds_with_leftovers += 1;
        }
        // Temporary files: the kill landed inside a part's (or a manifest's) write.
        let temporaries = checkpoint_dirs(&store)
            .iter()
            .flat_map(|d| fs::read_dir(job_dir.join(d)).unwrap())
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with('.')
            })
            .count();
        if temporaries > 0 {
            rounds_inside_a_write += 1;
        }
        eprintln!(
            "round {round}: killed after {delay:?}; complete {:?}, incomplete newer: \
             {leftovers}, temporary files: {temporaries}",
            ids(&listed)
        );
        round += 1;
    }
    eprintln!("{rounds_inside_a_write} kills landed inside a file's write");
    // The kills did land in the middle of checkpoints, and checkpoints did complete in between.
    assert!(rounds_with_leftovers >= 3, "{rounds_with_leftovers}");
    assert!(committed.len() >= 3, "{committed:?}");
    // A last start cleans the leftovers up once it completes a checkpoint.
    let store = LocalDirStore::new(&tmp.0, KILL_JOB).unwrap();
    let id = store.next_id().unwrap();
    for (k, name) in KILL_PARTS.iter().enumerate() {
        store
            .write_part(id, name, &content(id, name, kill_part_len(id, k)))
            .unwrap();
    }
    store
        .commit(id, id * 10, &names(&KILL_PARTS), meta(id))
        .unwrap();
    store.retain(KILL_KEEP).unwrap();
    assert!(store
        .scan()
        .unwrap()
        .iter()
        .all(|e| matches!(e.status, CheckpointStatus::Complete(_))));
    assert_eq!(store.list().unwrap().len(), KILL_KEEP);
}

#[test]
fn a_killed_log_writer_leaves_a_prefix() {
    let tmp = Scratch::new("kill-log");
    let path = tmp.0.join("log").join("epochs.log");
    let mut count = 0;
    let mut torn_tails = 0;
    let delays = kill_delays(8, 30, 300);
    let mut round = 0;
    while round < delays.len() || (count <= 20 && round < 20) {
        let delay = delays
            .get(round)
            .copied()
            .unwrap_or(Duration::from_millis(1000));
        let child = spawn_child("child_log_writer", LOG_CHILD_ENV, &tmp.0);
        kill_after(child, delay);
        let records = DurableLog::read_all(&tmp.0, "epochs").unwrap();
        let valid_len: u64 = 8 + records.iter().map(|r| 8 + r.len() as u64).sum::<u64>();
        let file_len = fs::metadata(&path).map_or(0, |m| m.len());
        if file_len > valid_len {
            torn_tails += 1;
        }
        assert!(
            records.len() >= count,
            "round {round}: {} records, {count} before",
            records.len()
        );
        for (i, r) in records.iter().enumerate() {
            assert!(*r == record(i), "round {round}: record {i} differs");
        }
        eprintln!(
            "round {round}: killed after {delay:?}; {} records, {} bytes of torn tail",
            records.len(),
            file_len.saturating_sub(valid_len)
        );
        count = records.len();
        round += 1;
    }
    eprintln!("{torn_tails} kills left a torn tail");
    assert!(count > 20, "{count}");
    let mut log = DurableLog::open(&tmp.0, "epochs").unwrap();
    assert_eq!(log.len(), count);
    log.append(&record(count)).unwrap();
    let records = DurableLog::read_all(&tmp.0, "epochs").unwrap();
    assert_eq!(records.len(), count + 1);
    assert!(records.iter().enumerate().all(|(i, r)| *r == record(i)));
}
