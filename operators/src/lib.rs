//! # runnel-operators
//!
//! Keyed, event-time operators for runnel jobs: windows (tumbling, sliding, session) with
//! aggregates, and joins (windowed and interval). They are extension traits on the engine's
//! [`KeyedStream`](runnel_engine::KeyedStream); `use runnel_operators::prelude::*` brings them all.
//!
//! Every operator here is an [`EpochLogic`](runnel_engine::EpochLogic) run by the engine's
//! epoch-driven stateful operator, so results depend only on the records and the epoch cuts,
//! never on worker count or scheduling.

pub mod aggregate;
pub mod join;
pub mod window;

pub use aggregate::{Aggregate, Avg, Count, Max, Min, Sum};
pub use join::interval::{IntervalJoinExt, Joined};
pub use join::windowed::{WindowJoinExt, WindowJoined};
pub use window::global::Global;
pub use window::session::Session;
pub use window::sliding::Sliding;
pub use window::tumbling::Tumbling;
pub use window::{WindowExt, WindowResult, WindowSpec, Windowed};

/// Everything a job needs from this crate, for one `use`.
pub mod prelude {
    pub use crate::aggregate::{Aggregate, Avg, Count, Max, Min, Sum};
    pub use crate::join::interval::IntervalJoinExt;
    pub use crate::join::windowed::WindowJoinExt;
    pub use crate::window::global::Global;
    pub use crate::window::session::Session;
    pub use crate::window::sliding::Sliding;
    pub use crate::window::tumbling::Tumbling;
    pub use crate::window::WindowExt;
}
