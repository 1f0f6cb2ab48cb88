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
//! mimalloc reads its options when the process starts, so the binary sets the variable by
//! running itself again with it ([`keeps_freed_memory`] says whether it is set).

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
