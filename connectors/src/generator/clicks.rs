//! Clickstream sample data: [`PageView`] records generated deterministically from a seed
//! (users with sessions of a few views separated by long gaps), and a writer to JSON lines.

use std::collections::HashMap;
use std::path::Path;

use runnel_engine::Result;
use serde::{Deserialize, Serialize};

use crate::file::write_json_lines;

/// One page view of the clickstream sample data.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PageView {
    /// The user, `0..users`.
    pub user: u64,
    /// The page's path, for example `/product/17`.
    pub page: String,
    /// Event time in milliseconds from the start of the data (0).
    pub ts_ms: i64,
}

/// The shortest gap between two views of one session, in milliseconds (1 s).
pub const MIN_VIEW_GAP_MS: i64 = 1_000;
/// The longest gap between two views of one session, in milliseconds (59 s).
pub const MAX_VIEW_GAP_MS: i64 = 59_000;
/// The shortest gap between two sessions of one user, in milliseconds (31 min).
pub const MIN_SESSION_GAP_MS: i64 = 31 * 60_000;
/// The longest gap between two sessions of one user, in milliseconds (90 min).
pub const MAX_SESSION_GAP_MS: i64 = 90 * 60_000;
/// The fewest views in a session (the last session of a user may have fewer).
pub const MIN_SESSION_VIEWS: u64 = 2;
/// The most views in a session.
pub const MAX_SESSION_VIEWS: u64 = 6;

const LANDING: [&str; 4] = ["/", "/search", "/promo", "/home"];
const BROWSE: [&str; 6] = [
    "/search",
    "/cart",
    "/checkout",
    "/account",
    "/help",
    "/home",
];
const PRODUCTS: u64 = 50;

/// SplitMix64: a tiny, well-mixed deterministic generator.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (`n > 0`), by multiply-shift (no division).
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next()) * u128::from(n)) >> 64) as u64
    }
    /// Uniform in `lo..=hi`.
    fn between(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.below((hi - lo + 1) as u64) as i64
    }
}

/// Where one user is in their browsing.
struct UserState {
    next_ts: i64,
    /// Views left in the current session.
    left: u64,
    /// Views so far in the current session.
    pos: u64,
    rng: SplitMix64,
}

impl UserState {
    fn new(seed: u64, user: u64) -> Self {
        let mut rng = SplitMix64(seed ^ user.wrapping_mul(0xd6e8_feb8_6659_fd93));
        let next_ts = rng.between(0, 59_999);
        let left = session_len(&mut rng);
        UserState {
            next_ts,
            left,
            pos: 0,
            rng,
        }
    }

    fn view(&mut self, user: u64) -> PageView {
        let rng = &mut self.rng;
        let page = if self.pos == 0 {
            LANDING[rng.below(LANDING.len() as u64) as usize].to_string()
        } else if rng.below(2) == 0 {
            format!("/product/{}", rng.below(PRODUCTS))
        } else {
            BROWSE[rng.below(BROWSE.len() as u64) as usize].to_string()
        };
        let view = PageView {
            user,
            page,
            ts_ms: self.next_ts,
        };
        self.left -= 1;
        if self.left == 0 {
            self.next_ts += rng.between(MIN_SESSION_GAP_MS, MAX_SESSION_GAP_MS);
            self.left = session_len(rng);
            self.pos = 0;
        } else {
            self.next_ts += rng.between(MIN_VIEW_GAP_MS, MAX_VIEW_GAP_MS);
            self.pos += 1;
        }
        view
    }
}

fn session_len(rng: &mut SplitMix64) -> u64 {
    MIN_SESSION_VIEWS + rng.below(MAX_SESSION_VIEWS - MIN_SESSION_VIEWS + 1)
}

/// `views` page views by users `0..users`, generated from `seed` and sorted by time (ties by
/// user). The same arguments always give the same views.
///
/// Each view goes to a user drawn uniformly; each user's first view is in the first minute, and
/// their views form sessions of [`MIN_SESSION_VIEWS`]..=[`MAX_SESSION_VIEWS`] views, 1..=59 s
/// apart within a session and 31..=90 min apart between sessions. A session window with any gap
/// from 1 min to 31 min therefore recovers exactly the generated sessions. With `users == 0`
/// there is nobody to view anything and the result is empty.
pub fn page_views(users: u64, views: u64, seed: u64) -> Vec<PageView> {
    if users == 0 {
        return Vec::new();
    }
    let mut pick = SplitMix64(seed);
    let mut states: HashMap<u64, UserState> = HashMap::new();
    let mut out = Vec::with_capacity(usize::try_from(views).unwrap_or(0));
    for _ in 0..views {
        let user = pick.below(users);
        let state = states
            .entry(user)
            .or_insert_with(|| UserState::new(seed, user));
        out.push(state.view(user));
    }
    out.sort_by_key(|v| (v.ts_ms, v.user));
    out
}

/// Writes `views` to `path` as JSON lines, one view per line (atomically: into a temporary file
/// next to `path`, then renamed onto it).
///
/// Errors: [`runnel_engine::Error::Io`] naming the file that could not be written.
pub fn write_page_views(path: impl AsRef<Path>, views: &[PageView]) -> Result<()> {
    write_json_lines(path, views)
}
