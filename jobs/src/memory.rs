//! Memory touched before a run (`runnel run/bench --pretouch SIZE`), and the page faults of a
//! run.
//!
//! On a virtual machine whose host provides memory when the guest first touches it (a
//! Firecracker VM, a ballooned guest), a job whose state grows pays for every new page while
//! it runs: measured on the project's machine, about 4 s per GB after the first few GB, spent
//! in the workers' page faults, which is where the p99 of q17-q20 at half load went (see
//! BENCHMARKS.md). `--pretouch` does what the JVM's `-XX:+AlwaysPreTouch` does for its heap:
//! before the job starts, it writes SIZE of memory in 1 MiB blocks and frees it, and the
//! allocator (mimalloc) is told never to give freed memory back to the operating system
//! (`MIMALLOC_PURGE_DELAY=-1`), so the job's state grows into pages that are already there.
//! The price: the process holds at least SIZE for its whole life, and memory it frees is
//! never returned.
//!
//! Touch-ahead ([`TouchAhead`], on by default in `runnel run` and `runnel bench` with 64 MiB,
//! `--touch-ahead SIZE` to change it, 0 to turn it off) provides the memory while the job runs
//! instead, on a thread of its own, ahead of where the allocator grows (at least SIZE, more
//! for a job that holds more or whose memory grows fast: [`lead`]): no size to guess, and
//! only a lead more than the job uses.
//!
//! mimalloc reads its options when the process starts, so the binary sets the variables by
//! running itself again with them ([`keeps_freed_memory`], [`arena_reserve_is_small`]).

/// The environment variable that tells mimalloc how long to wait before it gives freed memory
/// back to the operating system, in ms; `-1` is never.
pub const PURGE_DELAY_VAR: &str = "MIMALLOC_PURGE_DELAY";

/// The block size of [`pretouch`].
const BLOCK: usize = 1 << 20;

/// Whether this process's allocator was started with freed memory kept for ever
/// ([`PURGE_DELAY_VAR`] is `-1`).
pub fn keeps_freed_memory() -> bool {
    std::env::var(PURGE_DELAY_VAR).is_ok_and(|v| v.trim() == "-1")
}

/// Writes `bytes` of memory (rounded up to whole MiB) in blocks of 1 MiB, then frees it all.
/// With [`keeps_freed_memory`] the pages stay in the allocator for the run to reuse.
pub fn pretouch(bytes: u64) {
    let blocks = bytes.div_ceil(BLOCK as u64);
    let mut held: Vec<Vec<u8>> = Vec::with_capacity(blocks as usize);
    for _ in 0..blocks {
        // Non-zero, so that the allocator cannot hand out pages it has not written.
        held.push(vec![1u8; BLOCK]);
    }
    std::hint::black_box(&held);
}

/// The environment variable that sets the size of the arenas mimalloc makes for itself, in
/// KiB or with a unit.
pub const ARENA_RESERVE_VAR: &str = "MIMALLOC_ARENA_RESERVE";

/// The value of [`ARENA_RESERVE_VAR`] with touch-ahead ([`TouchAhead`]): mimalloc then makes its first
/// arena 64 MiB (it adds 32 MiB to what it reserves and rounds up).
pub const SMALL_ARENA_RESERVE: &str = "32MiB";

/// Whether mimalloc was started with [`SMALL_ARENA_RESERVE`].
pub fn arena_reserve_is_small() -> bool {
    std::env::var(ARENA_RESERVE_VAR).is_ok_and(|v| v.trim() == SMALL_ARENA_RESERVE)
}

/// The unit in which memory is provided ahead: a transparent huge page, when the region may
/// have them (`MIMALLOC_ALLOW_THP` is not 0, and the kernel's setting allows `madvise`).
const GRANULE: usize = 2 << 20;

/// The granules to provide next: every granule that is not yet `provided` and lies at most
/// `ahead` granules after a `used` one (the used one included), nearest to a used granule
/// first, then by address. At most `limit` of them.
///
/// `used` and `provided` have one entry per granule of the region.
pub fn touch_plan(used: &[bool], provided: &[bool], ahead: usize, limit: usize) -> Vec<usize> {
    debug_assert_eq!(used.len(), provided.len());
    let mut plan: Vec<(usize, usize)> = Vec::new();
    // The distance from the nearest used granule at or before `g`, if within `ahead`.
    let mut since_used: Option<usize> = None;
    for g in 0..used.len() {
        since_used = if used[g] {
            Some(0)
        } else {
            since_used.map(|d| d + 1).filter(|&d| d <= ahead)
        };
        if let Some(d) = since_used {
            if !provided[g] {
                plan.push((d, g));
            }
        }
    }
    plan.sort_unstable();
    plan.truncate(limit);
    plan.into_iter().map(|(_, g)| g).collect()
}

/// What [`TouchAhead`] has done so far.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TouchAheadStats {
    /// Bytes the thread has provided.
    pub provided_bytes: u64,
    /// Minor page faults taken by the thread (each a page it provided that was not there).
    pub faults: u64,
    /// The largest lead it aimed to keep ahead of use, bytes: the lead asked for, or, when
    /// more, the allocator's growth over [`GROWTH_WINDOW`] or what it had in use (up to
    /// [`MAX_LEAD_FACTOR`] times it; see [`lead`]). A thread held up may have kept less.
    pub largest_lead_bytes: u64,
}

/// How far back touch-ahead looks at the allocator's growth: the lead it keeps is at least
/// what the allocator took in that long (see [`Growth`]), up to [`MAX_LEAD_FACTOR`] times the
/// lead asked for.
pub const GROWTH_WINDOW: std::time::Duration = std::time::Duration::from_secs(4);

/// The most the lead grows to for a job that holds much or whose memory grows fast, in
/// multiples of the lead asked for (`--touch-ahead SIZE`): the lead applies after each place the allocator grows
/// from, so this bounds what is provided and never used.
pub const MAX_LEAD_FACTOR: usize = 8;

/// The lead to keep ahead of use, in granules: the lead `asked` for, or, when more, the
/// larger of the allocator's recent growth (`grown`, see [`Growth`]) and what it has
/// `in_use` (the granules it has ever taken: freed memory is kept), up to
/// [`MAX_LEAD_FACTOR`] times `asked`.
///
/// As much as is in use, because a job's memory grows in steps as large as what it holds: a
/// vector or a hash table doubles, and a merge of an arrangement's two largest batches writes
/// a batch of their size before it frees them. q3 at about half of its peak (7.2M events/s
/// on 2 workers) went from 360 to 578 MB and from 578 to 1,054 MB in about a second at its
/// arrangements' large merges (their 128th and 256th epochs); a lead of 64 MiB or of the last
/// seconds' growth had the workers fault those pages in themselves, and its p99 was 70-322
/// ms; with this lead, 18-24 ms (BENCHMARKS.md, "Results, session 38"). The JVM grows its
/// heap ahead of use by a share of it too (`-XX:MinHeapFreeRatio`).
pub fn lead(asked: usize, grown: usize, in_use: usize) -> usize {
    asked.max(grown.max(in_use).min(asked.saturating_mul(MAX_LEAD_FACTOR)))
}

/// The allocator's recent growth, in granules: what it took since the last look at least
/// [`GROWTH_WINDOW`] ago (longer when the thread was held up between looks, or had nothing to
/// do). Touch-ahead keeps at least that much ahead of use, so that
/// a state that grows fast, whose provider is held up for a moment (it runs at a lower
/// priority than the workers), is not overtaken (see [`lead`] for the rest of the rule).
#[derive(Debug)]
pub struct Growth {
    window: std::time::Duration,
    /// (when, granules in use then), oldest first; the first at or before the window's start.
    seen: std::collections::VecDeque<(std::time::Instant, usize)>,
}

impl Growth {
    /// Growth over `window`.
    pub fn new(window: std::time::Duration) -> Self {
        Growth {
            window,
            seen: std::collections::VecDeque::new(),
        }
    }

    /// Records that `used` granules were in use at `now` (not before the last record), and
    /// returns how many more than at the last record at or before `now - window` (the first
    /// record, if none is that old).
    pub fn observe(&mut self, now: std::time::Instant, used: usize) -> usize {
        let start = now.checked_sub(self.window);
        while self.seen.len() >= 2 && start.is_some_and(|s| self.seen[1].0 <= s) {
            self.seen.pop_front();
        }
        let grown = self
            .seen
            .front()
            .map_or(0, |&(_, then)| used.saturating_sub(then));
        self.seen.push_back((now, used));
        grown
    }
}

// The only unsafe code of the workspace outside its dependencies: the allocator's C API and
// the kernel's mmap/madvise, each call with what makes it sound.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
mod ahead {
    use super::{
        lead, touch_plan, Growth, TouchAheadError, TouchAheadStats, GRANULE, GROWTH_WINDOW,
    };
    use std::ffi::c_void;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
    use std::sync::OnceLock;
    use std::time::Duration;

    // The C library that defines `mi_manage_memory`.
    extern crate mimalloc as _;

    /// The region handed to mimalloc, and the granules it has started to use.
    struct Region {
        base: usize,
        len: usize,
        used: Box<[AtomicBool]>,
    }

    static REGION: OnceLock<Region> = OnceLock::new();
    /// Set once the region is handed over: the commits mimalloc makes while it takes it (each
    /// piece's own metadata, at its start) are not where it will grow.
    static HANDED_OVER: AtomicBool = AtomicBool::new(false);
    static PROVIDED: AtomicU64 = AtomicU64::new(0);
    /// How many ranges mimalloc has started to use in the region: the thread looks at the
    /// marks again only when this moved.
    static COMMITS: AtomicU64 = AtomicU64::new(0);
    static FAULTS: AtomicU64 = AtomicU64::new(0);
    /// The largest lead kept so far, in bytes.
    static LEAD: AtomicU64 = AtomicU64::new(0);
    /// Set once the thread is started.
    static STARTED: AtomicBool = AtomicBool::new(false);

    type CommitFn = unsafe extern "C" fn(
        commit: bool,
        start: *mut c_void,
        size: usize,
        is_zero: *mut bool,
        arg: *mut c_void,
    ) -> bool;

    extern "C" {
        // mimalloc v3 (libmimalloc-sys builds it, linked through the `mimalloc` crate):
        // `include/mimalloc.h`.
        fn mi_manage_memory(
            start: *mut c_void,
            size: usize,
            is_committed: bool,
            is_pinned: bool,
            is_zero: bool,
            numa_node: std::ffi::c_int,
            exclusive: bool,
            commit_fun: Option<CommitFn>,
            commit_fun_arg: *mut c_void,
            arena_id: *mut *mut c_void,
        ) -> bool;
    }

    /// mimalloc's commit function for the region: marks the granules of a range it starts
    /// to use. The memory is mapped read-write already, so committing needs nothing else;
    /// decommitting is refused (false: the memory stays as it is), so nothing provided is
    /// given back. Called inside the allocator: it must not allocate.
    unsafe extern "C" fn on_commit(
        commit: bool,
        start: *mut c_void,
        size: usize,
        _is_zero: *mut bool,
        _arg: *mut c_void,
    ) -> bool {
        if !commit {
            return false;
        }
        if !HANDED_OVER.load(Ordering::Relaxed) {
            return true;
        }
        if let Some(r) = REGION.get() {
            let lo = (start as usize).saturating_sub(r.base) / GRANULE;
            let hi = ((start as usize + size).saturating_sub(r.base)).div_ceil(GRANULE);
            for flag in r.used.iter().take(hi).skip(lo) {
                flag.store(true, Ordering::Relaxed);
            }
            COMMITS.fetch_add(1, Ordering::Release);
        }
        true
    }

    /// Whether mimalloc uses transparent huge pages (`MIMALLOC_ALLOW_THP`, on unless 0).
    fn thp_allowed() -> bool {
        !std::env::var("MIMALLOC_ALLOW_THP").is_ok_and(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "0" | "false" | "no" | "off"
            )
        })
    }

    fn thread_minor_faults() -> u64 {
        // SAFETY: getrusage writes the struct it is given.
        unsafe {
            let mut u: libc::rusage = std::mem::zeroed();
            if libc::getrusage(libc::RUSAGE_THREAD, &mut u) == 0 {
                u.ru_minflt as u64
            } else {
                0
            }
        }
    }

    pub(super) fn start(ahead: u64) -> Result<(), TouchAheadError> {
        if REGION.get().is_some() {
            return Err(TouchAheadError::Running);
        }
        // The mapping of an allocation made before the region exists, so in an arena of
        // mimalloc's own: the first, made before `main`. Looked up before the region is mapped,
        // which the kernel might otherwise merge with it.
        let probe = &*Box::new(0u64) as *const u64 as usize;
        let first_arena = mapping_of(probe).filter(|&(_, len)| len <= 256 << 20);
        // SAFETY: sysconf has no preconditions.
        let pages = unsafe { libc::sysconf(libc::_SC_PHYS_PAGES) };
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if pages <= 0 || page <= 0 {
            return Err(TouchAheadError::MemoryUnknown);
        }
        let align = 32usize << 20;
        let len = (pages as usize * page as usize) / align * align;
        // SAFETY: a fresh anonymous mapping, at an address of the kernel's choice.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len + align,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(TouchAheadError::Map {
                mb: len >> 20,
                source: std::io::Error::last_os_error(),
            });
        }
        let base = (p as usize).div_ceil(align) * align;
        let granules = len / GRANULE;
        let used: Box<[AtomicBool]> = (0..granules).map(|_| AtomicBool::new(false)).collect();
        if REGION.set(Region { base, len, used }).is_err() {
            return Err(TouchAheadError::Running);
        }
        if thp_allowed() {
            // As mimalloc does for its own arenas: a granule is then one huge page, one fault.
            // SAFETY: advice on a mapping of ours; failing is harmless.
            unsafe { libc::madvise(base as *mut c_void, len, libc::MADV_HUGEPAGE) };
        }
        // mimalloc splits a region into arenas of at most 16 GiB, each with its metadata at
        // its start, and refuses an arena of exactly 16 GiB (the metadata does not fit in
        // what it allows for it): so the region is handed over in pieces of 15 GiB.
        let piece = 15usize << 30;
        let mut at = 0;
        while at < len {
            let size = piece.min(len - at);
            let mut arena: *mut c_void = std::ptr::null_mut();
            // SAFETY: the piece is ours, mapped read-write, zero, aligned to 32 MiB, and is
            // never unmapped; `on_commit` does not allocate.
            let ok = unsafe {
                mi_manage_memory(
                    (base + at) as *mut c_void,
                    size,
                    false,
                    false,
                    true,
                    -1,
                    false,
                    Some(on_commit),
                    std::ptr::null_mut(),
                    &mut arena,
                )
            };
            if !ok {
                if at == 0 {
                    return Err(TouchAheadError::Refused { mb: size >> 20 });
                }
                // What it took is used; the rest stays unused address space.
                tracing::warn!(
                    "touch-ahead: the allocator took {} MB of the {} MB region",
                    at >> 20,
                    len >> 20
                );
                break;
            }
            at += size;
        }
        HANDED_OVER.store(true, Ordering::Relaxed);
        tracing::debug!(
            "touch-ahead: region at {base:#x}, {} MB, {} MB ahead",
            len >> 20,
            ahead >> 20
        );
        let ahead = (ahead as usize).div_ceil(GRANULE);
        std::thread::Builder::new()
            .name("runnel-touch-ahead".into())
            .spawn(move || run(ahead, first_arena))
            .map_err(TouchAheadError::Thread)?;
        STARTED.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// The mapping (start, length) that holds `addr`, from `/proc/self/maps`.
    fn mapping_of(addr: usize) -> Option<(usize, usize)> {
        let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
        maps.lines().find_map(|line| {
            let (lo, hi) = line.split_whitespace().next()?.split_once('-')?;
            let lo = usize::from_str_radix(lo, 16).ok()?;
            let hi = usize::from_str_radix(hi, 16).ok()?;
            (lo <= addr && addr < hi).then_some((lo, hi - lo))
        })
    }

    /// A thread at idle priority (`SCHED_IDLE`) that the touch-ahead thread waits for before
    /// each granule: it runs only when a core is free, so the touch-ahead thread starts a
    /// granule only then, as if it were at idle priority itself.
    ///
    /// The touch-ahead thread is not at idle priority itself because `MADV_POPULATE_WRITE`
    /// holds the process's memory map (its `mmap_lock`, for reading) while it faults a range
    /// in. A thread at `SCHED_IDLE` preempted while it holds it may not run again for a second
    /// or more while the cores are busy (another process's workers, on a shared machine); and
    /// once any thread of the process waits to change the map (`mmap`, `munmap`: a thread's
    /// stack, a large buffer), every thread that then needs the map waits behind it. Seen with
    /// the two processes of a cluster on one machine, whose first checkpoint then came seconds
    /// late. So the touch-ahead thread plans, allocates, logs and faults pages in at nice 10
    /// (below the workers, but with a tenth of a busy core), and only its waiting for a free
    /// core is done at idle priority, by this thread, which holds nothing but its turn.
    struct IdleGate {
        ask: SyncSender<()>,
        go: Receiver<()>,
    }

    /// Never returns: a thread's exit gives its stack back (glibc's madvise on it holds the
    /// memory map), which a thread at idle priority must not do.
    fn park_for_ever() -> ! {
        loop {
            std::thread::park();
        }
    }

    impl IdleGate {
        /// `idle`: lower the gate's priority (false for tests, `RUNNEL_TOUCH_AHEAD_IDLE=0`).
        fn start(idle: bool) -> std::io::Result<Self> {
            let (ask, asked) = sync_channel::<()>(1);
            let (went, go) = sync_channel::<()>(1);
            std::thread::Builder::new()
                .name("runnel-touch-idle".into())
                .spawn(move || {
                    // A first wait at normal priority: a thread's first blocking wait on a
                    // channel sets up what it needs for it (its context: an allocation),
                    // which is not to be done at idle priority. An ask that comes in the
                    // meantime is answered at once.
                    match asked.recv_timeout(Duration::from_millis(1)) {
                        Ok(()) if went.send(()).is_err() => park_for_ever(),
                        Err(RecvTimeoutError::Disconnected) => park_for_ever(),
                        _ => {}
                    }
                    if idle {
                        let param = libc::sched_param { sched_priority: 0 };
                        // SAFETY: sched_setscheduler on this thread (0) with a valid
                        // parameter; failing leaves the thread at normal priority.
                        let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
                        if rc != 0 {
                            tracing::debug!(
                                "touch-ahead: could not lower the gate's priority: {}",
                                std::io::Error::last_os_error()
                            );
                        }
                    }
                    for () in asked {
                        if went.send(()).is_err() {
                            break;
                        }
                    }
                    park_for_ever()
                })?;
            Ok(IdleGate { ask, go })
        }

        /// Returns once the gate thread has run (a core was free), or at once with false if
        /// it is gone.
        fn wait(&self) -> bool {
            self.ask.send(()).is_ok() && self.go.recv().is_ok()
        }
    }

    /// Faults in `len` bytes at `start` (page-aligned) once a core is free.
    ///
    /// # Safety
    /// The range must lie in the region (which stays mapped for the process's life) or in
    /// mimalloc's first arena (which it never unmaps).
    unsafe fn populate(gate: &IdleGate, start: usize, len: usize) -> std::io::Result<()> {
        if !gate.wait() {
            return Err(std::io::Error::other(
                "its idle-priority thread has stopped",
            ));
        }
        // SAFETY: a mapped range of this process (the caller's contract). MADV_POPULATE_WRITE
        // writes no data, it only faults the pages in; a failure leaves the mapping as it was.
        let rc = unsafe { libc::madvise(start as *mut c_void, len, libc::MADV_POPULATE_WRITE) };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }

    /// Provides the allocator's first arena (`start`, `len`: the mapping that held an
    /// allocation of mimalloc's made before the region existed), a granule at a time, so that
    /// no call holds the process's memory map for long.
    fn provide_first_arena(gate: &IdleGate, (start, len): (usize, usize)) {
        let page = 4096;
        let start = start.div_ceil(page) * page;
        let mut at = 0;
        while at < len {
            let n = GRANULE.min(len - at);
            // SAFETY: mimalloc's first arena, which it never unmaps while the process runs.
            if let Err(e) = unsafe { populate(gate, start + at, n) } {
                tracing::debug!(
                    "touch-ahead: providing the allocator's first arena stopped at {} of {} \
                     MB: {e}",
                    at >> 20,
                    len >> 20
                );
                return;
            }
            PROVIDED.fetch_add(n as u64, Ordering::Relaxed);
            at += n;
        }
    }

    fn run(ahead: usize, first_arena: Option<(usize, usize)>) {
        let r = REGION
            .get()
            .expect("the region is set before the thread starts");
        let faults_at_start = thread_minor_faults();
        // Only when no worker wants a core: the thread's work can wait, theirs not (unless
        // RUNNEL_TOUCH_AHEAD_IDLE=0, for tests; see `TouchAhead`).
        let normal = std::env::var("RUNNEL_TOUCH_AHEAD_IDLE").is_ok_and(|v| v.trim() == "0");
        let gate = match IdleGate::start(!normal) {
            Ok(g) => g,
            Err(e) => {
                tracing::warn!(
                    "touch-ahead stopped: could not start its idle-priority thread: {e}; \
                     the run goes on without it"
                );
                return;
            }
        };
        if !normal {
            // Below the workers (nice 10 more than the process), but not so far that it waits
            // long for a core while it holds the map: a worker that wakes soon takes the core
            // from a thread of lower weight (within a scheduler slice, a few ms), and on a
            // core kept busy this one still has about a tenth of it (nice 10 weighs 110
            // against the workers' 1,024; `SCHED_IDLE` 3). A granule takes about 8 ms of a
            // core on the project's VM, so it holds the map for 80 ms at most on a busy core,
            // where at idle priority it held it for seconds.
            // SAFETY: getpriority and setpriority on this thread (0: the caller, on Linux),
            // with errno cleared first to tell a nice of -1 from an error; the kernel clamps
            // the value to 19. Failing leaves the thread at the process's priority.
            let rc = unsafe {
                *libc::__errno_location() = 0;
                let now = libc::getpriority(libc::PRIO_PROCESS, 0);
                if now == -1 && *libc::__errno_location() != 0 {
                    -1
                } else {
                    libc::setpriority(libc::PRIO_PROCESS, 0, now + 10)
                }
            };
            if rc != 0 {
                tracing::debug!(
                    "touch-ahead: could not lower the thread's priority: {}",
                    std::io::Error::last_os_error()
                );
            }
        }
        if let Some(m) = first_arena {
            provide_first_arena(&gate, m);
        }
        FAULTS.store(
            thread_minor_faults().saturating_sub(faults_at_start),
            Ordering::Relaxed,
        );
        let mut provided = vec![false; r.used.len()];
        let mut used = vec![false; r.used.len()];
        // The commits seen at the last look, when it found nothing to do.
        let mut idle_at: Option<u64> = None;
        let mut growth = Growth::new(GROWTH_WINDOW);
        loop {
            let commits = COMMITS.load(Ordering::Acquire);
            if idle_at == Some(commits) {
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
            let mut in_use = 0;
            for (u, flag) in used.iter_mut().zip(r.used.iter()) {
                *u = flag.load(Ordering::Relaxed);
                in_use += usize::from(*u);
            }
            // At least the lead asked for, and as much as the allocator took lately or has
            // in use, up to a bound.
            let grown = growth.observe(std::time::Instant::now(), in_use);
            let lead = lead(ahead, grown, in_use);
            LEAD.fetch_max((lead * GRANULE) as u64, Ordering::Relaxed);
            // A few at a time, so that a place the allocator has just reached comes first.
            let plan = touch_plan(&used, &provided, lead, 4);
            if plan.is_empty() {
                idle_at = Some(commits);
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
            idle_at = None;
            for g in plan {
                debug_assert!(g * GRANULE + GRANULE <= r.len);
                // SAFETY: a granule inside the region.
                if let Err(e) = unsafe { populate(&gate, r.base + g * GRANULE, GRANULE) } {
                    match e.raw_os_error() {
                        Some(libc::EINTR) | Some(libc::EAGAIN) => {
                            // Tried again at the next plan, after a pause.
                            std::thread::sleep(Duration::from_millis(1));
                            continue;
                        }
                        Some(libc::EINVAL) => tracing::warn!(
                            "touch-ahead stopped: the kernel refused MADV_POPULATE_WRITE \
                             ({e}; it needs Linux 5.14 or later); the run goes on without it"
                        ),
                        _ => tracing::warn!(
                            "touch-ahead stopped: providing {} MB at offset {} MB of its \
                             region failed: {e}; the run goes on without it",
                            GRANULE >> 20,
                            (g * GRANULE) >> 20
                        ),
                    }
                    return;
                }
                provided[g] = true;
                PROVIDED.fetch_add(GRANULE as u64, Ordering::Relaxed);
            }
            FAULTS.store(
                thread_minor_faults().saturating_sub(faults_at_start),
                Ordering::Relaxed,
            );
        }
    }

    pub(super) fn started() -> bool {
        STARTED.load(Ordering::Relaxed)
    }

    /// Whether the kernel takes `MADV_POPULATE_WRITE` (Linux 5.14), tried on a page of its own.
    pub(super) fn supported() -> bool {
        // SAFETY: a fresh anonymous page of ours, advised and unmapped; nothing else sees it.
        unsafe {
            let p = libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            if p == libc::MAP_FAILED {
                return false;
            }
            let ok = libc::madvise(p, 4096, libc::MADV_POPULATE_WRITE) == 0;
            libc::munmap(p, 4096);
            ok
        }
    }

    pub(super) fn stats() -> TouchAheadStats {
        TouchAheadStats {
            provided_bytes: PROVIDED.load(Ordering::Relaxed),
            faults: FAULTS.load(Ordering::Relaxed),
            largest_lead_bytes: LEAD.load(Ordering::Relaxed),
        }
    }
}

/// The background provider of memory of touch-ahead (on by default in `runnel run` and
/// `runnel bench`, `--touch-ahead SIZE`): one per process, for the
/// process's life.
///
/// [`pretouch`] pays for a run's memory before the run, in one go and up to a size the user
/// has to guess. This pays for it while the run goes, a little ahead of where the state grows,
/// on a thread of its own: at half load a worker has time to spare, but a page fault on this
/// VM stops the worker that takes it, and the results it holds wait (see BENCHMARKS.md, "Fresh
/// memory"). The mechanism:
///
/// * [`TouchAhead::start`] maps a region of address space the size of the machine's memory
///   (`MAP_NORESERVE`: nothing is provided yet) and hands it to mimalloc as an arena with a
///   commit function of ours (`mi_manage_memory`). mimalloc calls that function for each
///   range it starts to use; the function marks the range's 2 MiB granules, and nothing more
///   (it runs inside the allocator: no allocation, no lock).
/// * A thread (`runnel-touch-ahead`) looks at the marks each millisecond in which mimalloc
///   started to use more of the region (a counter of its commits says so) and provides, with
///   `madvise(MADV_POPULATE_WRITE)` (Linux 5.14), every granule within the lead after a
///   marked one that it has not provided yet (the lead: SIZE, or, when more, what the
///   allocator took in the last [`GROWTH_WINDOW`] or what it has in use, up to
///   [`MAX_LEAD_FACTOR`] times SIZE: [`lead`]),
///   nearest first, one at a time, each once a second thread at idle priority
///   (`runnel-touch-idle`) has run: that is, when a core is free.
///   `MADV_POPULATE_WRITE` writes no data: it only faults in the pages, so it is safe on
///   memory the allocator is using. It holds the process's memory map while it does, which
///   is why the thread that calls it is at nice 10 rather than at idle priority: a thread at
///   idle priority that holds the map and waits for a free core would stop every thread of
///   the process that needs to change the map, for seconds on a busy machine.
/// * The arena never gives memory back (the commit function refuses to decommit), so what was
///   provided stays provided, as with [`pretouch`].
///
/// mimalloc searches its arenas in order from one that depends on the thread, the last one
/// last, so some threads look in the arena it made for itself before `main` before they look
/// in the region. That arena is 1 GiB by default: the binary runs itself again with
/// [`ARENA_RESERVE_VAR`] set small ([`arena_reserve_is_small`]), which makes it 64 MiB, and
/// with freed memory kept ([`PURGE_DELAY_VAR`] `-1`), since memory given back there would be
/// provided afresh at each reuse. The thread provides that first arena whole before anything
/// else (the mapping that holds an allocation made before the region is mapped).
///
/// The cost: up to the lead of memory provided but not used (SIZE for a job with little
/// memory, as much as the most it has held for a larger one, up to [`MAX_LEAD_FACTOR`] times
/// SIZE for a large one or one that grows fast), for each place the
/// allocator grows from (a few: mimalloc spreads its threads over the arena); and the thread's time, which on
/// a machine that provides memory at a normal speed is one zeroing pass over each page, paid
/// by the thread instead of by a worker.
///
/// For tests, `RUNNEL_TOUCH_AHEAD_IDLE=0` leaves both threads at normal priority: at idle
/// priority a machine kept busy by other work (a test suite's other tests) may never run the
/// gate.
pub struct TouchAhead;

/// Why [`TouchAhead::start`] failed.
#[derive(Debug, thiserror::Error)]
pub enum TouchAheadError {
    /// It was started before in this process.
    #[error("touch-ahead is already running in this process")]
    Running,
    /// The machine's memory size could not be read.
    #[error("touch-ahead: the machine's memory size is unknown")]
    MemoryUnknown,
    /// The region could not be mapped.
    #[error("touch-ahead: could not map {mb} MB of address space: {source}")]
    Map {
        /// Its size.
        mb: usize,
        /// The kernel's error.
        source: std::io::Error,
    },
    /// The allocator refused the region.
    #[error("touch-ahead: the allocator did not take a region of {mb} MB")]
    Refused {
        /// The size of the piece it refused.
        mb: usize,
    },
    /// The thread could not be started.
    #[error("touch-ahead: could not start its thread: {0}")]
    Thread(std::io::Error),
    /// Not Linux.
    #[error("--touch-ahead needs Linux 5.14 or later (MADV_POPULATE_WRITE)")]
    Unsupported,
}

impl TouchAhead {
    /// Hands a region the size of the machine's memory to the allocator and starts the thread
    /// that provides it `ahead` bytes ahead of its use. Only in a binary whose global allocator
    /// is mimalloc (the `runnel` binary): elsewhere the region is never used.
    pub fn start(ahead: u64) -> Result<(), TouchAheadError> {
        #[cfg(target_os = "linux")]
        {
            ahead::start(ahead)
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = ahead;
            Err(TouchAheadError::Unsupported)
        }
    }

    /// Whether [`TouchAhead::start`] started the thread in this process (it may have stopped
    /// since, with a warning, if the kernel refused to provide memory or its idle-priority
    /// thread could not start).
    pub fn started() -> bool {
        #[cfg(target_os = "linux")]
        {
            ahead::started()
        }
        #[cfg(not(target_os = "linux"))]
        {
            false
        }
    }

    /// Whether this machine can provide memory ahead: Linux 5.14 or later
    /// (`MADV_POPULATE_WRITE`).
    pub fn supported() -> bool {
        #[cfg(target_os = "linux")]
        {
            ahead::supported()
        }
        #[cfg(not(target_os = "linux"))]
        {
            false
        }
    }

    /// What the thread has done so far (zeros if it was never started).
    pub fn stats() -> TouchAheadStats {
        #[cfg(target_os = "linux")]
        {
            ahead::stats()
        }
        #[cfg(not(target_os = "linux"))]
        {
            TouchAheadStats::default()
        }
    }
}

/// Minor page faults of this process so far (`/proc/self/stat`, Linux): on a machine whose
/// memory is provided on first touch, each is a page the host had to provide.
pub fn minor_faults() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // After the command name (in parentheses, which may hold spaces): state, ppid, pgrp,
    // session, tty_nr, tpgid, flags, minflt.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(7)?.parse().ok()
}

/// Parses a size: a number of bytes, or a number with a suffix `K`, `M`, `G` or `T` (powers of
/// 1024, optionally followed by `iB` or `B`), like `512M`, `4G` or `1.5GiB`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let shift = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        _ => {
            return Err(format!(
                "`{s}` is not a size: use a number of bytes or one with K, M, G or T, like 4G"
            ))
        }
    };
    let n: f64 = number
        .parse()
        .map_err(|_| format!("`{s}` is not a size: `{number}` is not a number"))?;
    let bytes = n * (1u64 << shift) as f64;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(format!("`{s}` is too large"));
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_and_without_units() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("1536"), Ok(1536));
        assert_eq!(parse_size("512M"), Ok(512 * 1024 * 1024));
        assert_eq!(parse_size("4G"), Ok(4 * 1024 * 1024 * 1024));
        assert_eq!(parse_size("4gib"), Ok(4 * 1024 * 1024 * 1024));
        assert_eq!(parse_size("1.5G"), Ok(3 * 512 * 1024 * 1024));
        assert_eq!(parse_size("2 KB"), Ok(2048));
        assert!(parse_size("4X").unwrap_err().contains("4X"));
        assert!(parse_size("G").unwrap_err().contains("not a number"));
        assert!(parse_size("1.2.3M").is_err());
        assert!(parse_size("99999999T").unwrap_err().contains("too large"));
    }

    /// The granules `touch_plan` must cover, computed another way: for each granule, the
    /// distance back to the nearest used granule at or before it, by looking back.
    fn distance_back(used: &[bool], g: usize) -> Option<usize> {
        (0..=g).rev().find(|&u| used[u]).map(|u| g - u)
    }

    proptest::proptest! {
        #[test]
        fn the_touch_plan_is_what_lies_within_reach_of_use_nearest_first(
            cells in proptest::collection::vec((proptest::bool::weighted(0.1), proptest::bool::weighted(0.3)), 0..300),
            ahead in 0usize..40,
            limit in 0usize..50,
        ) {
            let used: Vec<bool> = cells.iter().map(|c| c.0).collect();
            let provided: Vec<bool> = cells.iter().map(|c| c.1).collect();
            let want: Vec<(usize, usize)> = (0..used.len())
                .filter(|&g| !provided[g])
                .filter_map(|g| distance_back(&used, g).filter(|&d| d <= ahead).map(|d| (d, g)))
                .collect();
            let all = touch_plan(&used, &provided, ahead, usize::MAX);
            // Everything within reach and not provided, nothing else, each once.
            let mut got_set = all.clone();
            got_set.sort_unstable();
            got_set.dedup();
            proptest::prop_assert_eq!(got_set.len(), all.len());
            let mut want_set: Vec<usize> = want.iter().map(|w| w.1).collect();
            want_set.sort_unstable();
            proptest::prop_assert_eq!(&got_set, &want_set);
            // Nearest first.
            let dist: Vec<usize> = all.iter().map(|&g| distance_back(&used, g).unwrap()).collect();
            proptest::prop_assert!(dist.windows(2).all(|w| w[0] <= w[1]), "{:?}", dist);
            // A limit keeps the nearest ones.
            let some = touch_plan(&used, &provided, ahead, limit);
            proptest::prop_assert_eq!(some.len(), all.len().min(limit));
            let some_dist: Vec<usize> = some.iter().map(|&g| distance_back(&used, g).unwrap()).collect();
            proptest::prop_assert_eq!(some_dist, dist[..some.len()].to_vec());
        }
    }

    proptest::proptest! {
        /// The growth `Growth` reports at each look is, by the whole record of looks kept
        /// here, what is in use now less what was in use at the last look at or before the
        /// window's start (the first look, if none is that old).
        #[test]
        fn growth_is_the_use_now_less_the_use_at_the_window_start(
            steps in proptest::collection::vec((0u64..3_000, 0usize..50), 1..60),
            window_ms in 1u64..5_000,
        ) {
            let window = std::time::Duration::from_millis(window_ms);
            let t0 = std::time::Instant::now();
            let mut growth = Growth::new(window);
            let mut looks: Vec<(u64, usize)> = Vec::new();
            let (mut at, mut used) = (0u64, 0usize);
            for (dt, more) in steps {
                at += dt;
                used += more;
                let got = growth.observe(t0 + std::time::Duration::from_millis(at), used);
                let base = looks
                    .iter()
                    .rev()
                    .find(|&&(t, _)| t + window_ms <= at)
                    .or(looks.first())
                    .map_or(used, |&(_, u)| u);
                proptest::prop_assert_eq!(got, used - base, "at {} ms", at);
                looks.push((at, used));
            }
        }
    }

    /// In granules of 2 MiB, with the default lead of 64 MiB (32 granules): a job with
    /// little memory keeps the lead asked for; a larger one as much as it has in use, or its
    /// recent growth when that is more; never more than 8 times the lead asked for.
    #[test]
    fn the_lead_is_the_one_asked_for_or_the_use_or_the_growth_up_to_eight_times() {
        assert_eq!(lead(32, 0, 0), 32);
        assert_eq!(lead(32, 10, 30), 32, "60 MB in use, 20 MB grown");
        assert_eq!(lead(32, 10, 180), 180, "360 MB in use: 360 MB ahead");
        assert_eq!(lead(32, 200, 180), 200, "400 MB grown in the window");
        assert_eq!(lead(32, 0, 1500), 256, "3 GB in use: 512 MB ahead at most");
        assert_eq!(lead(32, 400, 0), 256);
        assert_eq!(lead(128, 10, 100), 128, "a larger lead asked for");
    }

    #[test]
    fn minor_faults_grow_when_fresh_memory_is_written() {
        let before = minor_faults().expect("Linux /proc/self/stat");
        // 64 MiB the process has not used: at least one fault per 2 MiB huge page.
        let block = vec![1u8; 64 << 20];
        std::hint::black_box(&block);
        let after = minor_faults().expect("Linux /proc/self/stat");
        assert!(after >= before + 32, "{before} -> {after}");
    }
}
